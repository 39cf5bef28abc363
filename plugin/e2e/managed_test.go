package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// The managed plugin: `make plugin`'s script builds the rootfs (tabby,
// iptables, nft) from config.json and creates tabby:latest in a real
// dockerd; `docker plugin set` and `enable` start it; networks with
// --driver/--ipam-driver tabby:latest give containers that talk; a setting
// changed with `docker plugin set` takes effect; disabling and removing it
// leaves the host clean.
// pluginMounts are the managed plugin's mount settings for a lab host,
// whose Docker socket and exec root are not at the default paths.
func pluginMounts(h *lab.Host) []string {
	return []string{"docker.source=" + h.DockerSock, "dockerexec.source=" + filepath.Join(h.Dir, "exec")}
}

// runMakePlugin runs make plugin's script against h's Docker: the plugin
// ref from the config at cfg, laid out in out.
func runMakePlugin(t *testing.T, l *lab.Lab, h *lab.Host, cfg, out, ref string) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	mk := exec.Command(filepath.Join(root, "plugin/managed/make-plugin.sh"), l.Bin, cfg, out)
	mk.Env = append(os.Environ(), "DOCKER_HOST=unix://"+h.DockerSock, "PLUGIN="+ref)
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make-plugin.sh %s: %v\n%s", ref, err, b)
	}
}

// makeLocalPlugin makes tabby:latest in h's Docker from config.json.
func makeLocalPlugin(t *testing.T, l *lab.Lab, h *lab.Host) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	runMakePlugin(t, l, h, filepath.Join(root, "config.json"), filepath.Join(l.Dir, "plugin"), "tabby:latest")
	t.Cleanup(func() { h.Docker("plugin", "rm", "-f", "tabby:latest") })
}

func TestManagedPlugin(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1, NoTabby: true})
	h := l.Hosts[0]
	makeLocalPlugin(t, l, h)
	// A fresh host: no directory is made for the plugin beforehand. Only
	// the mounts are set, since the lab's paths are not the default ones.
	must(t, h, append([]string{"plugin", "set", "tabby:latest", "NODENAME=node00", "IP=" + h.Addr}, pluginMounts(h)...)...)
	must(t, h, "plugin", "enable", "tabby:latest")
	if ls := must(t, h, "plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"); !strings.Contains(ls, "tabby:latest true") {
		t.Fatalf("plugin not enabled:\n%s", ls)
	}

	net := []string{"network", "create", "--driver", "tabby:latest", "--ipam-driver", "tabby:latest"}
	must(t, h, append(net, "net1")...)
	must(t, h, append(net, "net2")...)
	must(t, h, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, h, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	must(t, h, "run", "--net", "net2", "--name", "containerC", "-tid", "busybox")
	ipB := ipOf(t, h, "containerB", "net1")
	if r := must(t, h, "exec", "containerA", "ip", "route"); !strings.Contains(r, "default via 169.254.1.1 dev cali0") {
		t.Fatalf("container routes:\n%s", r)
	}
	eventually(t, 10*time.Second, "containerA reaches containerB through the plugin's rules", func() (string, bool) {
		return pings(h, "containerA", ipB)
	})
	if out, ok := pings(h, "containerC", ipB); ok {
		t.Fatalf("net2 reaches net1: the plugin's nftables policy is not in force:\n%s", out)
	}
	if fwd := mustExec(t, h, "iptables", "-S", "TABBY-FORWARD"); !strings.Contains(fwd, "-i cali+") {
		t.Fatalf("the plugin's iptables rules are missing:\n%s", fwd)
	}
	eventually(t, 10*time.Second, "the plugin untracks containerA's traffic in its namespace", func() (string, bool) {
		ct := conntrackIn(t, h, "containerA")
		return ct, !strings.Contains(ct, ipB)
	})
	// The CLI on the host talks to the plugin's control socket and etcd.
	// Its control socket is in the plugin's own directory, which Docker
	// keeps in /run/docker/plugins/ID (in the lab, the host's PluginDir).
	id := must(t, h, "plugin", "inspect", "-f", "{{.Id}}", "tabby:latest")
	// A short link to it: the lab's path is longer than a unix socket
	// address may be.
	run := filepath.Join(l.Dir, "p")
	if err := os.Symlink(filepath.Join(h.PluginDir, id), run); err != nil {
		t.Fatal(err)
	}
	cli := exec.Command("nsenter", "--net=/run/netns/"+h.NS, l.Bin, "node", "status")
	cli.Env = []string{"TABBY_RUN_DIR=" + run}
	if b, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(b), "tabby process is running.") {
		t.Fatalf("tabby node status against the plugin: %v\n%s", err, b)
	}

	// The pool-wide --subnet beside a network without one: the plugin opens
	// the container's namespace through its mount of Docker's exec root to
	// set the pool's route aside.
	must(t, h, append(net, "--subnet", "192.168.0.0/16", "netpool")...)
	must(t, h, "run", "--net", "netpool", "--name", "containerP", "-tid", "busybox")
	must(t, h, "network", "connect", "net1", "containerP")
	if r := must(t, h, "exec", "containerP", "ip", "route", "show", "table", "77"); !strings.Contains(r, "192.168.0.0/16") {
		t.Fatalf("containerP's pool route should be in table 77:\n%s", r)
	}
	mustPing(t, h, "containerB", ipOf(t, h, "containerP", "net1"))

	// docker plugin set needs the plugin disabled, so its users go first.
	must(t, h, "rm", "-f", "containerA", "containerB", "containerC", "containerP")
	must(t, h, "network", "rm", "net1", "net2", "netpool")
	must(t, h, "plugin", "disable", "tabby:latest")
	must(t, h, "plugin", "set", "tabby:latest", "NODENAME=node00-renamed")
	must(t, h, "plugin", "enable", "tabby:latest")
	eventually(t, 15*time.Second, "the renamed node registered", func() (string, bool) {
		// The embedded etcd is a root-only socket beside the control socket.
		get := exec.Command("nsenter", "--net=/run/netns/"+h.NS, l.Bin, "get", "nodes")
		get.Env = []string{"TABBY_RUN_DIR=" + run}
		b, _ := get.CombinedOutput()
		return string(b), strings.Contains(string(b), "node00-renamed")
	})

	must(t, h, "plugin", "disable", "tabby:latest")
	must(t, h, "plugin", "rm", "tabby:latest")
	if out := mustExec(t, h, "iptables", "-S"); strings.Contains(out, "TABBY") {
		t.Fatalf("rules left after the plugin was removed:\n%s", out)
	}
	if out := mustExec(t, h, "nft", "list", "tables"); strings.Contains(out, "tabby") {
		t.Fatalf("nftables table left after the plugin was removed:\n%s", out)
	}
}

// Docker 29's nftables firewall backend does not turn forwarding on (with
// --ip-forward=false it does not ask for it either), and a managed plugin
// cannot write /proc/sys. IPv6 has no per-link switch over netlink: with
// IP6 set, the daemon cannot start, and Docker's first call (enable itself
// only waits for the socket) fails with one error naming the sysctl to run.
// Once the user has run it and enabled the plugin again, it turns IPv4
// forwarding on link by link over netlink: containers talk while
// net.ipv4.ip_forward stays 0.
func TestManagedPluginForwardingOff(t *testing.T) {
	if os.Getenv("TABBY_DOCKER_MAJOR") != "29" {
		t.Skip("--firewall-backend=nftables is Docker 28+: make e2e-29 (run by make test) runs this")
	}
	l := lab.New(t, lab.Options{Hosts: 1, NoTabby: true, IPv6: true,
		DockerdArgs: []string{"--firewall-backend=nftables", "--ip-forward=false"}})
	h := l.Hosts[0]
	for _, k := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if f := mustExec(t, h, "cat", k); f != "0" {
			t.Fatalf("the host should start with forwarding off, %s=%s", k, f)
		}
	}
	makeLocalPlugin(t, l, h)
	must(t, h, append([]string{"plugin", "set", "tabby:latest", "NODENAME=node00", "IP=" + h.Addr, "IP6=" + h.Addr6}, pluginMounts(h)...)...)
	must(t, h, "plugin", "enable", "tabby:latest")
	net := []string{"network", "create", "--driver", "tabby:latest", "--ipam-driver", "tabby:latest"}
	out, err := h.Docker(append(net, "net1")...)
	if err == nil || !strings.Contains(out, "sysctl -w net.ipv6.conf.all.forwarding=1") || strings.Count(out, "\n") > 1 {
		t.Fatalf("network create with IPv6 forwarding off: want one error naming the sysctl, got %v:\n%s", err, out)
	}
	t.Logf("docker network create with IPv6 forwarding off: %s", out)
	if ls := must(t, h, "network", "ls", "--format", "{{.Name}}"); strings.Contains(ls, "net1") {
		t.Fatalf("the failed create left net1:\n%s", ls)
	}
	mustExec(t, h, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding") // the user's fix
	must(t, h, "plugin", "disable", "tabby:latest")
	must(t, h, "plugin", "enable", "tabby:latest")
	must(t, h, append(net, "net1")...)
	must(t, h, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, h, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	eventually(t, 10*time.Second, "containerA reaches containerB with ip_forward off", func() (string, bool) {
		return pings(h, "containerA", ipOf(t, h, "containerB", "net1"))
	})
	if f := mustExec(t, h, "cat", "/proc/sys/net/ipv4/ip_forward"); f != "0" {
		t.Fatalf("ip_forward is %s: the test proves nothing", f)
	}
	ep := endpointOf(t, h, "containerA", "net1")
	if nc := mustExec(t, h, "ip", "netconf", "show", "dev", hostIf(ep)); !strings.Contains(nc, "forwarding on") {
		t.Fatalf("containerA's veth should forward:\n%s", nc)
	}
	must(t, h, "rm", "-f", "containerA", "containerB")
	must(t, h, "network", "rm", "net1")
}
