package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// The lab's registry and the plugins' etcd listen on the switch's address,
// which only the lab's hosts reach.
const (
	labRegistry = "10.99.0.1:5000"
	switchEtcd  = "http://10.99.0.1:2379"
)

// startInSwitch runs a server in the lab's switch namespace until the test
// ends (stopped by its PID) and waits for it to accept on addr.
func startInSwitch(t *testing.T, l *lab.Lab, name, addr string, args ...string) {
	t.Helper()
	logf, _ := os.Create(filepath.Join(l.Dir, name+".log"))
	cmd := l.InSwitch(args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	eventually(t, 20*time.Second, name+" listens on "+addr, func() (string, bool) {
		err := inNetns(l.SwitchNS(), func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		b, _ := os.ReadFile(filepath.Join(l.Dir, name+".log"))
		return string(b), err == nil
	})
}

// makePlugin builds the managed plugin as ref in h's Docker, with config.json
// changed by edit (a newer version differs in its description), and pushes
// it to the lab's registry.
func makePlugin(t *testing.T, l *lab.Lab, h *lab.Host, ref, description string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	cfg, err := os.ReadFile(filepath.Join(root, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), `"description": "`, `"description": "`+description+` `, 1)
	cfgPath := filepath.Join(l.Dir, "config-"+description+".json")
	os.WriteFile(cfgPath, []byte(edited), 0o644)
	runMakePlugin(t, l, h, cfgPath, filepath.Join(l.Dir, "plugin-"+description), ref)
	must(t, h, "plugin", "push", ref)
}

// The way users get plugins: built with make plugin's script on one host,
// pushed to a registry, and installed on two fresh hosts with docker
// plugin install. A network made on one appears on the other under the
// same plugin reference, and containers ping across. Then docker plugin
// upgrade to a newer tag on both hosts while containers run: no ping lost,
// no address leaked.
func TestPluginFromRegistry(t *testing.T) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("docker-registry is missing (make deps installs it)")
		}
		t.Skip("needs Debian's docker-registry (make deps installs it)")
	}
	l := lab.New(t, lab.Options{Hosts: 3, NoTabby: true, DockerdArgs: []string{"--insecure-registry", labRegistry}})
	builder, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	regCfg := filepath.Join(l.Dir, "registry.yml")
	os.WriteFile(regCfg, []byte(fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage:\n  filesystem: {rootdirectory: %s}\nhttp: {addr: %q}\n",
		filepath.Join(l.Dir, "registry"), labRegistry)), 0o644)
	startInSwitch(t, l, "registry", labRegistry, "docker-registry", "serve", regCfg)
	// The plugins' etcd: a managed plugin sees none of the host's files, so
	// not the lab's etcd socket either.
	startInSwitch(t, l, "etcd", "10.99.0.1:2379", "etcd", "--name", "sw", "--data-dir", filepath.Join(l.Dir, "switch-etcd"),
		"--listen-client-urls", switchEtcd, "--advertise-client-urls", switchEtcd,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "sw=http://127.0.0.1:2380", "--log-level", "error")

	v1, v2 := labRegistry+"/tabby:v1", labRegistry+"/tabby:v2"
	makePlugin(t, l, builder, v1, "v1")
	makePlugin(t, l, builder, v2, "v2")
	for _, h := range []*lab.Host{n1, n2} {
		must(t, h, append([]string{"plugin", "install", "--grant-all-permissions", v1, "ETCD_ENDPOINTS=" + switchEtcd,
			"NODENAME=" + h.Name, "IP=" + h.Addr}, pluginMounts(h)...)...)
		t.Cleanup(func() { h.Docker("plugin", "rm", "-f", v1) })
	}
	must(t, n1, "network", "create", "--driver", v1, "--ipam-driver", v1, "net1")
	eventually(t, 20*time.Second, "net1 mirrored on "+n2.Name+" under the same plugin reference", func() (string, bool) {
		out, _ := n2.Docker("network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}", "net1")
		return out, out == v1+" "+v1
	})
	must(t, n1, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n2, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	ipB := ipOf(t, n2, "containerB", "net1")
	eventually(t, 30*time.Second, "containerA reaches containerB across hosts", func() (string, bool) {
		return pings(n1, "containerA", ipB)
	})

	// Upgrade both hosts, one after the other, while containerA pings.
	done := make(chan int, 1)
	go func() { lost, _ := pingFor(n1, "containerA", ipB, 150); done <- lost }()
	for _, h := range []*lab.Host{n2, n1} {
		must(t, h, "plugin", "disable", "-f", v1)
		// --skip-remote-check: the new tag is another reference than the
		// installed one, and without it the CLI asks (and, with no
		// terminal, cancels while exiting 0).
		must(t, h, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", v1, v2)
		// Docker keeps the settings of the environment across an upgrade
		// but takes mount sources from the new config: the lab's Docker
		// paths are not the default ones.
		must(t, h, append([]string{"plugin", "set", v1}, pluginMounts(h)...)...)
		must(t, h, "plugin", "enable", v1)
		// The name stays v1's (networks name it); the config is v2's.
		if d := must(t, h, "plugin", "inspect", "-f", "{{.Config.Description}}", v1); !strings.HasPrefix(d, "v2 ") {
			t.Fatalf("%s runs %q after the upgrade, want %s's", h.Name, d, v2)
		}
		time.Sleep(3 * time.Second)
	}
	var lost int
	select {
	case lost = <-done:
		t.Fatalf("the pings ended before both upgrades did (%d lost): the count says nothing about the upgrade", lost)
	default:
		lost = <-done
	}
	report(t, "docker plugin upgrade", "packets lost across hosts while both hosts upgrade", fmt.Sprintf("%d of 150", lost), lost == 0)
	if lost != 0 {
		t.Fatalf("%d of 150 pings lost during the upgrade", lost)
	}
	// The upgraded plugins serve new containers.
	must(t, n2, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	mustPing(t, n1, "containerA", ipOf(t, n2, "containerC", "net1"))

	must(t, n1, "rm", "-f", "containerA")
	must(t, n2, "rm", "-f", "containerB", "containerC")
	cli := exec.Command("nsenter", "--net=/run/netns/"+n1.NS, l.Bin, "ipam", "check")
	cli.Env = []string{"ETCD_ENDPOINTS=" + switchEtcd}
	out, err := cli.CombinedOutput()
	leaked := err != nil || !strings.Contains(string(out), "IPAM is consistent")
	report(t, "docker plugin upgrade", "addresses leaked after the containers are removed", strings.TrimSpace(string(out)), !leaked)
	if leaked {
		t.Fatalf("tabby ipam check after the upgrade: %v\n%s", err, out)
	}
	must(t, n1, "network", "rm", "net1")
}
