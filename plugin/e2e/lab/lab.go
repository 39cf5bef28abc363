// Package lab builds Docker hosts on one machine for tabby's end-to-end
// tests and examples: each host is a network namespace with its own dockerd
// and tabby daemon, all joined by a bridge that lives in a namespace of its
// own, sharing one etcd over a unix socket. Nothing is put in the root
// namespace but processes, and Close removes everything, even after a failure.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// Subnet of the lab's underlay; host i is .10+i, the bridge is .1.
const underlay = "10.99.0."

// Lab is a set of hosts sharing one etcd.
type Lab struct {
	t    testing.TB
	Dir  string
	Bin  string
	Etcd *etcdtest.Server
	// EtcdCluster is set with Options.EtcdMembers; Etcd is then its first
	// member. EtcdEndpoints is what the daemons are given.
	EtcdCluster   *etcdtest.Cluster
	EtcdEndpoints []string
	etcdNS        []string
	Hosts         []*Host
	id            string
	switch_       string
	rootfs        string
	bridges       map[string]string // subnet -> bridge name in the switch namespace
	opt           Options
	restore       map[string]string // kernel settings changed for the lab, with their old values
	v6up          bool              // the switch has its IPv6 underlay address
}

// NIC is one interface of a host: its name and address/prefix. Hosts'
// NICs in one subnet share a bridge whose .1 is the subnet's gateway.
type NIC struct {
	Name string
	CIDR string
}

// Options shape a lab.
type Options struct {
	Hosts int
	// NICs lists each host's interfaces (nil: eth0 on 10.99.0.0/24); the
	// first one carries the default route.
	NICs [][]NIC
	// Env is added to every daemon's environment.
	Env []string
	// NoDocker runs tabby alone on each host (BGP benchmarks at scale).
	NoDocker bool
	// EtcdMembers, when above 1, runs an etcd cluster of that many
	// members, each in a namespace of its own, and gives every daemon all
	// of their endpoints.
	EtcdMembers int
	// DockerHosts, when set, runs dockerd on the first DockerHosts hosts
	// only, tabby alone on the rest (etcd cost at scale).
	DockerHosts int
	// EmbeddedEtcd runs each daemon with its own embedded etcd instead of the
	// shared one (single-host default).
	EmbeddedEtcd bool
	// DNS points each host's dockerd at its tabby resolver (--dns HOSTIP) and
	// the resolvers at an upstream on the switch, 10.99.0.1:53, that the test
	// provides; without it the resolvers are off.
	DNS bool
	// NoTabby starts dockerd alone (the managed plugin test installs tabby
	// into it).
	NoTabby bool
	// DockerdArgs are added to every dockerd's command line.
	DockerdArgs []string
	// IPv6 gives each host's first NIC an address in fd00:99::/64 (host i is
	// ::10+i, the switch ::1) and runs tabby with IP6 set to it.
	IPv6 bool
	// BeforeTabby runs once etcd is up, before any daemon starts, with its
	// endpoints (a 200-host lab turns the mesh off first: a mesh growing to
	// 19,900 sessions on 2 cores starves etcd).
	BeforeTabby func(etcd []string)
}

// Underlay6 is the lab's IPv6 underlay subnet when Options.IPv6 is set.
const Underlay6 = "fd00:99::"

// Dockerd is the dockerd the lab runs: $TABBY_DOCKERD (make e2e-29 points
// it at Docker Engine 29) or Debian's, found by PATH.
func Dockerd() string {
	if d := os.Getenv("TABBY_DOCKERD"); d != "" {
		return d
	}
	if p, err := exec.LookPath("dockerd"); err == nil {
		return p
	}
	return "dockerd"
}

// Requirements returns why a lab cannot run here, or "".
func Requirements() string {
	if os.Geteuid() != 0 {
		return "the lab needs root (network namespaces, dockerd)"
	}
	if _, err := os.Stat(Dockerd()); err != nil {
		return "the lab needs dockerd (make deps installs it; TABBY_DOCKERD names another): " + err.Error()
	}
	for _, b := range []string{"docker", "etcd", "busybox", "nsenter", "unshare", "ip", "iptables"} {
		if _, err := exec.LookPath(b); err != nil {
			return "the lab needs " + b + " (make deps installs it)"
		}
	}
	return ""
}

// Slow stretches a deadline in the guest of make test-kernel, where QEMU
// emulates the CPU (no KVM here) and everything takes several times longer.
func Slow(d time.Duration) time.Duration {
	if os.Getenv("TABBY_GUEST") != "" {
		return 5 * d
	}
	return d
}

// SkipForKernel skips a test that needs what this kernel lacks (a module):
// on this project's machine such tests run in the guest (make test-kernel),
// where TABBY_GUEST=1 turns the skip into a failure.
func SkipForKernel(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("TABBY_GUEST") != "" {
		t.Fatal("the guest kernel must have what this test needs: " + why)
	}
	t.Skip(why + " (make test-kernel runs it on a kernel that has it)")
}

// New builds a lab; t.Cleanup tears it down.
func New(t testing.TB, opt Options) *Lab {
	t.Helper()
	if why := Requirements(); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	bin, err := filepath.Abs("../../bin/tabby")
	if b := os.Getenv("TABBY_BIN"); b != "" { // another build, beside a run that uses bin/tabby
		bin = b
	}
	if err != nil || !exists(bin) {
		t.Fatalf("bin/tabby not built: run make build (looked at %s)", bin)
	}
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", "tabby-lab-")
	if err != nil {
		t.Fatal(err)
	}
	l := &Lab{t: t, Dir: dir, Bin: bin, id: id, switch_: "tlsw-" + id, bridges: map[string]string{}, opt: opt}
	t.Cleanup(l.Close)
	l.must("ip", "netns", "add", l.switch_)
	l.must("ip", "-n", l.switch_, "link", "set", "lo", "up")
	// The switch routes between its subnets, like a router between racks.
	l.must("nsenter", "--net=/run/netns/"+l.switch_, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	l.sizeNeighbourTable(opt.Hosts)
	switch {
	case opt.EtcdMembers > 1:
		for i := 0; i < opt.EtcdMembers; i++ {
			ns := fmt.Sprintf("te%d-%s", i, l.id)
			l.must("ip", "netns", "add", ns)
			l.etcdNS = append(l.etcdNS, ns)
			l.must("ip", "-n", ns, "link", "set", "lo", "up")
		}
		if l.EtcdCluster, err = etcdtest.StartCluster(l.etcdNS); err != nil {
			t.Fatal(err)
		}
		l.Etcd, l.EtcdEndpoints = l.EtcdCluster.Members[0], l.EtcdCluster.Endpoints
	case !opt.EmbeddedEtcd:
		if l.Etcd, err = etcdtest.Start(); err != nil {
			t.Fatal(err)
		}
		l.EtcdEndpoints = []string{l.Etcd.Endpoint}
	}
	if !opt.NoDocker {
		l.rootfs = l.makeRootfs()
	}
	if opt.BeforeTabby != nil {
		opt.BeforeTabby(l.EtcdEndpoints)
	}
	for i := 0; i < opt.Hosts; i++ {
		l.addHost(i, opt)
	}
	return l
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func (l *Lab) must(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sizeNeighbourTable makes room in the kernel's ARP table, which is shared
// by every namespace: a lab of n hosts puts n*(n-1) entries in one kernel
// where a real cluster has n-1 per host, and past gc_thresh3 (1024 by
// default) new neighbours fail with "neighbor table overflow". The old
// values come back at Close.
func (l *Lab) sizeNeighbourTable(hosts int) {
	need := 2 * hosts * hosts
	for _, k := range []string{"gc_thresh2", "gc_thresh3"} {
		path := "/proc/sys/net/ipv4/neigh/default/" + k
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		old := strings.TrimSpace(string(b))
		if n, _ := strconv.Atoi(old); n >= need {
			continue
		}
		if os.WriteFile(path, []byte(strconv.Itoa(need)), 0o644) == nil {
			if l.restore == nil {
				l.restore = map[string]string{}
			}
			l.restore[path] = old
		}
	}
}

// InSwitch runs a command in the namespace of the lab's bridges, where the
// subnets' .1 addresses live (a stand-in for a top-of-rack router).
func (l *Lab) InSwitch(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + l.switch_}, args...)...)
}

// makeRootfs lays out a busybox image to import into each host's Docker.
func (l *Lab) makeRootfs() string {
	root := filepath.Join(l.Dir, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, _ := exec.LookPath("busybox")
	l.must("cp", bb, filepath.Join(root, "bin/busybox"))
	for _, c := range []string{"sh", "ping", "ip", "sleep", "cat", "nc", "ls", "grep", "hostname", "wget", "httpd", "true", "nslookup"} {
		os.Symlink("busybox", filepath.Join(root, "bin", c))
	}
	tarball := filepath.Join(l.Dir, "busybox.tar")
	l.must("tar", "-C", root, "-cf", tarball, ".")
	return tarball
}

// Host is one Docker host.
type Host struct {
	lab        *Lab
	Name       string
	NS         string
	Addr       string
	Addr6      string // "" unless the lab has IPv6
	Dir        string
	DockerSock string
	PluginDir  string
	embedded   bool
	dockerd    *exec.Cmd
	tabby      *exec.Cmd
	tabbyDone  chan struct{}
	tabbyLog   *os.File
}

// bridge returns the switch's bridge for a subnet, made on first use with
// the subnet's .1 as its address (the hosts' default gateway).
func (l *Lab) bridge(cidr string) string {
	p := netip.MustParsePrefix(cidr).Masked()
	if br, ok := l.bridges[p.String()]; ok {
		return br
	}
	br := fmt.Sprintf("br%d", len(l.bridges))
	gw := p.Addr().Next()
	l.must("ip", "-n", l.switch_, "link", "add", br, "type", "bridge")
	l.must("ip", "-n", l.switch_, "addr", "add", netip.PrefixFrom(gw, p.Bits()).String(), "dev", br)
	l.must("ip", "-n", l.switch_, "link", "set", br, "up")
	l.bridges[p.String()] = br
	return br
}

func (l *Lab) addHost(i int, opt Options) *Host {
	nics := []NIC{{Name: "eth0", CIDR: underlay + strconv.Itoa(10+i) + "/24"}}
	if i < len(opt.NICs) && opt.NICs[i] != nil {
		nics = opt.NICs[i]
	}
	first := netip.MustParsePrefix(nics[0].CIDR)
	h := &Host{lab: l, Name: fmt.Sprintf("node%02d", i), NS: fmt.Sprintf("tl%d-%s", i, l.id),
		Addr: first.Addr().String(), Dir: filepath.Join(l.Dir, fmt.Sprintf("node%02d", i)), embedded: opt.EmbeddedEtcd}
	h.DockerSock = filepath.Join(h.Dir, "docker.sock")
	h.PluginDir = filepath.Join(h.Dir, "plugins")
	for _, d := range []string{h.PluginDir, filepath.Join(h.Dir, "data"), filepath.Join(h.Dir, "exec"), filepath.Join(h.Dir, "run")} {
		os.MkdirAll(d, 0o755)
	}
	l.must("ip", "netns", "add", h.NS)
	// Listed at once, so that Close removes it even when a later step of
	// its setup fails the test.
	l.Hosts = append(l.Hosts, h)
	l.must("ip", "-n", h.NS, "link", "set", "lo", "up")
	for k, nic := range nics {
		veth := fmt.Sprintf("tl%d%c-%s", i, 'a'+k, l.id)
		br := l.bridge(nic.CIDR)
		l.must("ip", "-n", l.switch_, "link", "add", veth, "type", "veth", "peer", "name", nic.Name, "netns", h.NS)
		l.must("ip", "-n", l.switch_, "link", "set", veth, "master", br, "up")
		l.must("ip", "-n", h.NS, "addr", "add", nic.CIDR, "dev", nic.Name)
		l.must("ip", "-n", h.NS, "link", "set", nic.Name, "up")
	}
	// A default route, as every real host has: proxy ARP answers for
	// 169.254.1.1 only when the host can route to it.
	l.must("ip", "-n", h.NS, "route", "add", "default", "via", first.Masked().Addr().Next().String())
	if opt.IPv6 {
		br := l.bridge(nics[0].CIDR)
		if !l.v6up {
			l.must("ip", "-n", l.switch_, "addr", "add", Underlay6+"1/64", "dev", br, "nodad")
			l.v6up = true
		}
		h.Addr6 = Underlay6 + strconv.Itoa(10+i)
		l.must("ip", "-n", h.NS, "addr", "add", h.Addr6+"/64", "dev", nics[0].Name, "nodad")
		l.must("ip", "-n", h.NS, "-6", "route", "add", "default", "via", Underlay6+"1")
	}
	if opt.NoDocker || (opt.DockerHosts > 0 && i >= opt.DockerHosts) {
		h.StartTabby(opt.Env...)
		return h
	}
	h.StartDocker()
	if !opt.NoTabby {
		h.StartTabby(opt.Env...)
	}
	if out, err := h.DockerIn(l.rootfs, "import", "-c", `CMD ["sh"]`, "-", "busybox:latest"); err != nil {
		l.t.Fatalf("import busybox into %s: %v %s", h.Name, err, out)
	}
	return h
}

// Close tears the lab down: containers, daemons (by PID), namespaces, files.
func (l *Lab) Close() {
	if l.t.Failed() {
		// Where the hosts wait, while they still do.
		for _, h := range l.Hosts {
			if h.dockerd != nil {
				l.t.Logf("--- %s: %s", h.Name, h.Diagnose())
			}
		}
	}
	for _, h := range l.Hosts {
		if h.dockerd != nil {
			if ids, err := h.Docker("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
				h.Docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
			}
		}
		h.StopTabby()
		h.StopDocker()
		exec.Command("ip", "netns", "del", h.NS).Run()
	}
	exec.Command("ip", "netns", "del", l.switch_).Run()
	for path, old := range l.restore {
		os.WriteFile(path, []byte(old), 0o644)
	}
	if l.EtcdCluster != nil {
		l.EtcdCluster.Stop()
	} else if l.Etcd != nil {
		l.Etcd.Stop()
	}
	for _, ns := range l.etcdNS {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	if l.t.Failed() || os.Getenv("TABBY_LAB_KEEP") != "" {
		for _, h := range l.Hosts {
			for _, f := range []string{"tabby.log", "dockerd.log"} {
				if f == "dockerd.log" && !l.opt.NoTabby {
					continue // tabby ran outside Docker: its own log says it all
				}
				if b, err := os.ReadFile(filepath.Join(h.Dir, f)); err == nil {
					l.t.Logf("--- %s %s (last 4 KiB):\n%s", h.Name, f, tail(b, 4096))
				}
			}
		}
	}
	os.RemoveAll(l.Dir)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// StartDocker runs dockerd inside the host: its own network namespace, a
// private mount namespace whose /run/docker/plugins is this host's plugin
// directory, and its own data, exec root, pid file and socket.
func (h *Host) StartDocker() {
	os.MkdirAll("/run/docker/plugins", 0o755)
	// The mount namespace's copies of other labs' /run/netns mounts would
	// keep those namespaces (and their veths) alive after they are deleted.
	// Shared mounts inside it, as on a systemd host, and the exec root a
	// mount of its own, as /run is there: runc makes the mount holding a
	// container's rootfs private in the container, so only then can a
	// managed plugin's slave mount of the exec root see the containers'
	// namespaces. The namespace was made private first: nothing of this
	// reaches the machine's.
	execRoot := filepath.Join(h.Dir, "exec")
	script := fmt.Sprintf("for m in /run/netns/*; do umount -l \"$m\" 2>/dev/null; done; mount --make-rshared / && "+
		"mount --bind %s %s && mount --bind %s /run/docker/plugins && exec %s --data-root %s --exec-root %s --pidfile %s -H unix://%s --storage-driver overlay2",
		execRoot, execRoot, h.PluginDir, Dockerd(), filepath.Join(h.Dir, "data"), execRoot, filepath.Join(h.Dir, "docker.pid"), h.DockerSock)
	for _, a := range h.lab.opt.DockerdArgs {
		script += " " + a
	}
	if h.lab.opt.DNS {
		script += " --dns " + h.Addr
		if h.Addr6 != "" {
			script += " --dns " + h.Addr6
		}
	}
	logf, _ := os.OpenFile(filepath.Join(h.Dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+h.NS, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	// dockerd finds runc, docker-proxy and containerd by PATH: an Engine
	// built elsewhere brings its own beside it.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(Dockerd())+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		h.lab.t.Fatalf("start dockerd on %s: %v", h.Name, err)
	}
	h.dockerd = cmd
	h.waitFor("dockerd", 30*time.Second, func() bool { _, err := h.Docker("version"); return err == nil })
}

// StopDocker stops dockerd by PID and waits for it.
func (h *Host) StopDocker() {
	if h.dockerd == nil {
		return
	}
	h.dockerd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { h.dockerd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.dockerd.Process.Kill()
		<-done
	}
	h.dockerd = nil
}

// TabbyEnv is the environment the host's daemon and CLI run with.
func (h *Host) TabbyEnv() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"NODENAME=" + h.Name,
		"IP=" + h.Addr,
		"IP6=" + h.Addr6,
		"TABBY_SOCKET=" + filepath.Join(h.PluginDir, "tabby.sock"),
		"TABBY_RUN_DIR=" + filepath.Join(h.Dir, "run"),
		"TABBY_DATA_DIR=" + filepath.Join(h.Dir, "tabbydata"),
		"DOCKER_HOST=unix://" + h.DockerSock,
		"TABBY_LOG_LEVEL=debug",
	}
	if h.lab.opt.DNS {
		env = append(env, "TABBY_DNS_UPSTREAM="+underlay+"1:53")
	} else {
		env = append(env, "TABBY_DNS_ADDR=off")
	}
	if !h.embedded {
		env = append(env, "ETCD_ENDPOINTS="+strings.Join(h.lab.EtcdEndpoints, ","))
	}
	return env
}

// StartTabby runs the tabby daemon inside the host and waits for its socket.
func (h *Host) StartTabby(extraEnv ...string) {
	logf, _ := os.OpenFile(filepath.Join(h.Dir, "tabby.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+h.NS, h.lab.Bin, "daemon")
	cmd.Env = append(h.TabbyEnv(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.lab.t.Fatalf("start tabby on %s: %v", h.Name, err)
	}
	h.tabby, h.tabbyLog = cmd, logf
	exited := make(chan struct{})
	h.tabbyDone = exited
	go func() { cmd.Wait(); close(exited) }()
	sock := filepath.Join(h.PluginDir, "tabby.sock")
	h.waitFor("tabby socket", 60*time.Second, func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(h.Dir, "tabby.log"))
			h.lab.t.Fatalf("tabby on %s exited at start:\n%s", h.Name, tail(b, 2048))
		default:
		}
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// StopTabby stops the daemon with SIGTERM (a clean shutdown) and waits.
func (h *Host) StopTabby() { h.signalTabby(syscall.SIGTERM) }

// KillTabby kills the daemon with SIGKILL (a crash).
func (h *Host) KillTabby() { h.signalTabby(syscall.SIGKILL) }

func (h *Host) signalTabby(sig syscall.Signal) {
	if h.tabby == nil {
		return
	}
	h.tabby.Process.Signal(sig)
	select {
	case <-h.tabbyDone:
	case <-time.After(30 * time.Second):
		h.tabby.Process.Kill()
		<-h.tabbyDone
	}
	h.tabby = nil
	h.tabbyLog.Close()
}

func (h *Host) waitFor(what string, d time.Duration, ok func() bool) {
	d = Slow(d)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.lab.t.Fatalf("%s on %s not ready after %s", what, h.Name, d)
}

// Docker runs the docker CLI against this host's daemon.
func (h *Host) Docker(args ...string) (string, error) { return h.DockerIn("", args...) }

// DockerWithin is Docker given up on after d instead of two minutes: for
// runs queued behind hundreds of others, where only a hang is a failure.
func (h *Host) DockerWithin(d time.Duration, args ...string) (string, error) {
	return h.docker(d, "", args...)
}

// DockerIn is Docker with a file as standard input.
func (h *Host) DockerIn(stdin string, args ...string) (string, error) {
	return h.docker(2*time.Minute, stdin, args...)
}

func (h *Host) docker(d time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + h.DockerSock}, args...)...)
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return "", err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// Exec runs a command inside the host's network namespace.
func (h *Host) Exec(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Tabby runs the tabby CLI inside the host with the daemon's settings.
func (h *Host) Tabby(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS, h.lab.Bin}, args...)...)
	cmd.Env = h.TabbyEnv()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// SwitchNS is the path of the switch's network namespace.
func (l *Lab) SwitchNS() string { return "/run/netns/" + l.switch_ }

// TabbyPID is the PID of the host's tabby daemon (0 when it is not running).
func (h *Host) TabbyPID() int {
	if h.tabby == nil || h.tabby.Process == nil {
		return 0
	}
	return h.tabby.Process.Pid
}
