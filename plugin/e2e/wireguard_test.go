package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// kernelHasWireGuard asks iproute2, independently of tabby.
func kernelHasWireGuard(h *lab.Host) bool {
	_, err := h.Exec("ip", "link", "add", "oracle0", "type", "wireguard")
	h.Exec("ip", "link", "del", "oracle0")
	return err == nil
}

// capture runs tcpdump on a host's interface (payloads in ASCII) until the
// returned function stops it and returns what it printed.
func capture(t *testing.T, h *lab.Host, iface string) func() string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("nsenter", "--net=/run/netns/"+h.NS, "tcpdump", "-i", iface, "-n", "-l", "-A", "-s", "256", "not arp")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump on %s: %v", h.Name, err)
	}
	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true
			time.Sleep(lab.Slow(500 * time.Millisecond)) // its last packets
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
		return out.String()
	}
	t.Cleanup(func() { stop() })
	// tcpdump says when it listens.
	eventually(t, 10*time.Second, "tcpdump listening on "+h.Name, func() (string, bool) {
		return "", strings.Contains(out.String(), "listening on")
	})
	return stop
}

// tcpTo sends a marker from ctr on from to port 9000 of a container that
// listens there, and waits until it arrived.
func tcpTo(t *testing.T, from *lab.Host, ctr string, to *lab.Host, dst, dstIP, marker string) {
	t.Helper()
	must(t, to, "exec", "-d", dst, "sh", "-c", "nc -l -p 9000 > /tmp/got")
	eventually(t, 20*time.Second, ctr+" sends "+marker+" to "+dst, func() (string, bool) {
		from.Docker("exec", ctr, "sh", "-c", "echo "+marker+" | nc -w 2 "+dstIP+" 9000")
		got, _ := to.Docker("exec", dst, "cat", "/tmp/got")
		return got, strings.Contains(got, marker)
	})
}

// WireGuard between hosts, Calico's model: the cluster's FelixConfiguration
// turns it on, node02's own turns it off there. node00 and node01 encrypt
// between them (the underlay carries only UDP 51820), and talk to node02 in
// clear, as Calico does with a node that publishes no key. Then rekeying
// (the key file removed, the daemon restarted) and switching it off.
func TestWireGuard(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 3})
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	if !kernelHasWireGuard(n0) {
		lab.SkipForKernel(t, "this kernel has no wireguard module (ip link add type wireguard fails)")
	}
	felix := "apiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {wireguardEnabled: %s}\n" +
		"---\napiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: node.node02}\nspec: {wireguardEnabled: false}\n"
	applyYAML(t, l, n0, "wg.yaml", strings.ReplaceAll(felix, "%s", "true"))
	createEverywhere(t, l, n0, "wgnet", "--subnet", "192.168.0.0/16", "-o", "tabby.publish=everywhere")
	for i, h := range l.Hosts {
		must(t, h, "run", "--net", "wgnet", "--name", "c"+strconv.Itoa(i), "-tid", "busybox")
	}
	must(t, n1, "run", "-d", "--net", "wgnet", "--name", "web", "-p", "8090:80", "busybox", "nc", "-ll", "-p", "80", "-e", "echo", "meshreply")
	ip0, ip1, ip2 := ipOf(t, n0, "c0", "wgnet"), ipOf(t, n1, "c1", "wgnet"), ipOf(t, n2, "c2", "wgnet")
	eventually(t, 30*time.Second, "node00: node01's block over wireguard.tabby, node02's in clear", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip1)+" dev wireguard.tabby proto 77 scope link") &&
			strings.Contains(r, blockOf(ip2)+" via "+n2.Addr+" dev eth0 proto 77")
	})
	eventually(t, 30*time.Second, "node01: node00's block over wireguard.tabby", func() (string, bool) {
		r, _ := n1.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip0)+" dev wireguard.tabby proto 77 scope link")
	})
	if out := mustExec(t, n2, "ip", "-o", "link"); strings.Contains(out, "wireguard.tabby") {
		t.Fatalf("node02 has WireGuard off, yet it has wireguard.tabby:\n%s", out)
	}
	if js := mustTabby(t, n0, "get", "nodes", "node02", "-o", "json"); strings.Contains(js, "wireguardPublicKey") {
		t.Fatalf("node02 must publish no key:\n%s", js)
	}
	for c, want := range map[*lab.Host][2]string{n0: {"c0", "mtu 1440"}, n2: {"c2", "mtu 1500"}} {
		if out := must(t, c, "exec", want[0], "ip", "link", "show", "cali0"); !strings.Contains(out, want[1]) {
			t.Fatalf("%s: cali0 should have %s (WireGuard's 60 bytes on an IPv4 underlay only where it encrypts):\n%s", want[0], want[1], out)
		}
	}
	if l := mustExec(t, n0, "ip", "link", "show", "wireguard.tabby"); !strings.Contains(l, "mtu 1440") {
		t.Fatalf("wireguard.tabby's MTU:\n%s", l)
	}

	// The attack: read container traffic off the wire between node00 and
	// node01. Only WireGuard's UDP may be seen, no ping, no TCP, no payload.
	stop := capture(t, n1, "eth0")
	mustPing(t, n0, "c0", ip1)
	tcpTo(t, n0, "c0", n1, "c1", ip1, "SECRETPAYLOAD")
	// A port published everywhere, asked at node00: node00 forwards the
	// connection to node01 masqueraded to wireguard.tabby's address (in
	// node00's block), so it is encrypted too, both ways.
	if a := mustExec(t, n0, "ip", "-4", "addr", "show", "wireguard.tabby"); !regexp.MustCompile(`inet 192\.168\.\d+\.\d+/32`).MatchString(a) {
		t.Fatalf("wireguard.tabby needs an address from the node's block:\n%s", a)
	}
	got := ""
	for i := 0; i < 40 && got != "meshreply"; i++ {
		got, _ = talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8090"), "hi\n")
		time.Sleep(250 * time.Millisecond)
	}
	if got != "meshreply" {
		t.Fatalf("a port published everywhere, at node00, over WireGuard: got %q", got)
	}
	seen := stop()
	if !strings.Contains(seen, n0.Addr+".51820 > "+n1.Addr+".51820: UDP") {
		t.Fatalf("no WireGuard packets between node00 and node01 on the underlay:\n%s", seen)
	}
	if strings.Contains(seen, ": ICMP ") || // not ICMP6 (router solicitations)
		strings.Contains(seen, ip0+".") || strings.Contains(seen, "SECRETPAYLOAD") ||
		strings.Contains(seen, "meshreply") || strings.Contains(seen, ".80:") {
		t.Fatalf("container traffic crossed the underlay in clear:\n%s", seen)
	}
	status := mustTabby(t, n0, "node", "status")
	if !regexp.MustCompile(`wireguard\.tabby, port 51820, public key \S+`).MatchString(status) ||
		!regexp.MustCompile(`\| node01 +\| `+regexp.QuoteMeta(n1.Addr)+`:51820 \| \S+ +\| `+regexp.QuoteMeta(blockOf(ip1))+`.*\| 20\d\d-`).MatchString(status) ||
		strings.Contains(status, "node02") {
		t.Fatalf("node status must list node01 (handshaked) as the one WireGuard peer:\n%s", status)
	}

	// With node02, which does not encrypt: traffic flows, in clear.
	stop = capture(t, n2, "eth0")
	mustPing(t, n0, "c0", ip2)
	mustPing(t, n2, "c2", ip1)
	if seen := stop(); !strings.Contains(seen, ip0+" > "+ip2+": ICMP echo request") {
		t.Fatalf("traffic with a host that does not encrypt goes in clear; the capture shows:\n%s", seen)
	}

	// The attack on the underlay: node02 forges c1's address (node01's
	// block, which reaches node00 only encrypted) towards c0. node00 drops
	// it before it reaches c0's interface.
	cali := regexp.MustCompile(`cali[0-9a-f]{11}`).FindString(mustExec(t, n0, "ip", "-o", "link"))
	stop = capture(t, n0, cali)
	mustExec(t, n2, "ip", "addr", "add", ip1+"/32", "dev", "lo")
	n2.Exec("busybox", "ping", "-c", "2", "-W", "2", "-s", "777", "-I", ip1, ip0)
	mustExec(t, n2, "ip", "addr", "del", ip1+"/32", "dev", "lo")
	if seen := stop(); strings.Contains(seen, "length 785") {
		t.Fatalf("a forged packet from node01's block reached c0:\n%s", seen)
	}
	mustPing(t, n1, "c1", ip0) // the real c1 still does

	// Rekeying: remove node01's key and restart its daemon.
	keyOf := func(h *lab.Host) string {
		js := mustTabby(t, n0, "get", "nodes", h.Name, "-o", "json")
		m := regexp.MustCompile(`"wireguardPublicKey": *"([^"]+)"`).FindStringSubmatch(js)
		if m == nil {
			return ""
		}
		return m[1]
	}
	old := keyOf(n1)
	keyFile := filepath.Join(n1.Dir, "tabbydata", "wireguard", "node01.key")
	priv, err := os.ReadFile(keyFile)
	if err != nil || old == "" || strings.Contains(string(priv), old) {
		t.Fatalf("node01's private key must be on the host (%v), its public key %q in etcd", err, old)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key file must be readable by root alone: %v", fi.Mode())
	}
	kvs, err := labStore(t, l).List(context.Background(), datastore.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if bytes.Contains(kv.Value, bytes.TrimSpace(priv)) {
			t.Fatalf("the private key reached etcd, at %s", kv.Key)
		}
	}
	n1.StopTabby()
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	n1.StartTabby()
	eventually(t, 60*time.Second, "node01 publishes a new key and node00 takes it", func() (string, bool) {
		k := keyOf(n1)
		st, _ := n0.Tabby("node", "status")
		return st, k != "" && k != old && strings.Contains(st, k)
	})
	mustPing(t, n0, "c0", ip1)

	// Off everywhere (the cluster's setting deleted): the devices, routes,
	// addresses and keys go; the clear routes come back.
	mustTabby(t, n0, "delete", "felixconfig", "default")
	for _, h := range []*lab.Host{n0, n1} {
		eventually(t, 30*time.Second, h.Name+" without wireguard.tabby, routing in clear", func() (string, bool) {
			links, _ := h.Exec("ip", "-o", "link")
			r, _ := h.Exec("ip", "route")
			js, _ := n0.Tabby("get", "nodes", h.Name, "-o", "json")
			return links + r + js, !strings.Contains(links, "wireguard.tabby") && !strings.Contains(r, "wireguard") && keyOf(h) == "" &&
				!strings.Contains(js, "ipv4WireguardInterfaceAddr")
		})
	}
	mustPing(t, n0, "c0", ip1)
}

// On a kernel without the wireguard module: `tabby apply` refuses to turn
// it on, naming the module; set anyway (from a host that has it), the
// daemon builds nothing, publishes no key and says why in node status.
func TestWireGuardWithoutTheModule(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	if kernelHasWireGuard(h) {
		t.Skip("this kernel has wireguard: the refusal does not apply (TestWireGuard covers WireGuard)")
	}
	out, err := h.Tabby("apply", "-f", writeFile(t, l, "wg.yaml",
		"apiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {wireguardEnabled: true}\n"))
	if err == nil || !strings.Contains(out, "wireguard module") || !strings.Contains(out, "spec.wireguardEnabled") {
		t.Fatalf("turning WireGuard on must be refused naming the missing module: %v\n%s", err, out)
	}
	if got := mustTabby(t, h, "get", "felixconfigs"); strings.Contains(got, "default") {
		t.Fatalf("the refused setting was stored:\n%s", got)
	}
	on := true
	st := labStore(t, l)
	if err := st.Put(context.Background(), datastore.FelixConfigKey("default"), &datastore.FelixConfiguration{Name: "default", WireguardEnabled: &on}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node status says why this host does not encrypt", func() (string, bool) {
		s, _ := h.Tabby("node", "status")
		return s, strings.Contains(s, "Not encrypting: WireGuard needs the kernel's wireguard module")
	})
	if links := mustExec(t, h, "ip", "-o", "link"); strings.Contains(links, "wireguard.tabby") || strings.Contains(links, "tabbywgprobe") {
		t.Fatalf("no device may be left half made:\n%s", links)
	}
	if js := mustTabby(t, h, "get", "nodes", h.Name, "-o", "json"); strings.Contains(js, "wireguardPublicKey") {
		t.Fatalf("a host that cannot encrypt must publish no key:\n%s", js)
	}
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "192.168.0.0/16", "net1")
	must(t, h, "run", "--net", "net1", "--name", "c0", "-tid", "busybox")
	if out := must(t, h, "exec", "c0", "ip", "link", "show", "cali0"); !strings.Contains(out, "mtu 1500") {
		t.Fatalf("a host that does not encrypt keeps the full MTU:\n%s", out)
	}
}

// BenchmarkWireGuard: container to container across hosts, encrypted
// (node00 to node01, both with WireGuard) against clear (node00 to node02,
// which has it off), in one run with interleaved rounds: TCP with 1 and 4
// streams and ping round trip. It needs the wireguard module, so it runs in
// make test-kernel's guest, where emulation distorts absolute figures:
// only the ratios mean anything, and there is no target.
func BenchmarkWireGuard(b *testing.B) {
	l, mustB := benchLab(b, 3)
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	if !kernelHasWireGuard(n0) {
		if os.Getenv("TABBY_GUEST") != "" {
			b.Fatal("the guest kernel must have wireguard")
		}
		b.Skip("this kernel has no wireguard module; make test-kernel runs this in its guest")
	}
	felix := "apiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {wireguardEnabled: true}\n" +
		"---\napiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: node.node02}\nspec: {wireguardEnabled: false}\n"
	if out, err := n0.Tabby("apply", "-f", writeFile(b, l, "wg.yaml", felix)); err != nil {
		b.Fatalf("apply: %v %s", err, out)
	}
	mustB(n0, "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "--subnet", "192.168.0.0/16", "plain")
	ctr := func(h *lab.Host, name string) (string, string) {
		var err error
		for i := 0; i < 100; i++ { // the network reaches the other hosts
			if _, err = h.Docker("run", "--net", "plain", "--name", name, "-tid", "busybox"); err == nil {
				break
			}
			time.Sleep(lab.Slow(100 * time.Millisecond))
		}
		if err != nil {
			b.Fatalf("run %s on %s: %v", name, h.Name, err)
		}
		pid := mustB(h, "inspect", "-f", "{{.State.Pid}}", name)
		ip := mustB(h, "inspect", "-f", "{{.NetworkSettings.Networks.plain.IPAddress}}", name)
		return "/proc/" + strings.TrimSpace(pid) + "/ns/net", strings.TrimSpace(ip)
	}
	cli, _ := ctr(n0, "client")
	encSrv, encIP := ctr(n1, "encrypted")
	clrSrv, clrIP := ctr(n2, "clear")
	for deadline := time.Now().Add(lab.Slow(30 * time.Second)); ; {
		r, _ := n0.Exec("ip", "route")
		if strings.Contains(r, blockOf(encIP)+" dev wireguard.tabby") && strings.Contains(r, blockOf(clrIP)+" via "+n2.Addr) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("routes not ready:\n%s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	paths := []*netPath{{name: "wireguard", client: cli, server: encSrv, addr: encIP}, {name: "clear", client: cli, server: clrSrv, addr: clrIP}}
	m := measurePaths(b, paths, 3)
	w, c := m["wireguard"], m["clear"]
	b.ReportMetric(w[0]/c[0], "wireguard-vs-clear-tput1")
	b.ReportMetric(w[1]/c[1], "wireguard-vs-clear-tput4")
	b.ReportMetric(w[2]/c[2], "wireguard-vs-clear-rtt")
}
