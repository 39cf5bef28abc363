package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// handWired is the baseline of the dataplane benchmark: on two lab hosts,
// a "container" namespace each, wired with ip commands the way tabby wires
// its endpoints (veth, /32 address, proxy ARP, default via 169.254.1.1, a
// /32 route per address), routed between the hosts either directly or over
// a VXLAN device of its own; and a veth joining the two host namespaces.
type handWired struct {
	b     testing.TB
	hosts [2]*lab.Host
	id    string
}

func (w *handWired) ns(i int, vx bool) string {
	if vx {
		return fmt.Sprintf("hwx%d-%s", i, w.id)
	}
	return fmt.Sprintf("hw%d-%s", i, w.id)
}

func (w *handWired) nsPath(i int, vx bool) string { return "/run/netns/" + w.ns(i, vx) }

func (w *handWired) addr(i int, vx bool) string {
	if vx {
		return fmt.Sprintf("10.78.%d.1", i)
	}
	return fmt.Sprintf("10.77.%d.1", i)
}

func (w *handWired) directAddr(i int) string { return fmt.Sprintf("10.88.0.%d", i+1) }

func (w *handWired) run(args ...string) {
	w.b.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		w.b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newHandWired(b testing.TB, l *lab.Lab, h0, h1 *lab.Host) *handWired {
	w := &handWired{b: b, hosts: [2]*lab.Host{h0, h1}, id: h0.NS[strings.IndexByte(h0.NS, '-')+1:]}
	b.Cleanup(w.close)
	for i, h := range w.hosts {
		peer := w.hosts[1-i]
		// iptables inside the host (Docker's FORWARD policy is DROP).
		for _, dir := range []string{"-i", "-o"} {
			w.run("ip", "netns", "exec", h.NS, "iptables", "-I", "FORWARD", "1", dir, "hwv+", "-j", "ACCEPT")
		}
		// The VXLAN device: VNI 4097 on UDP 4790, static ARP and FDB for the peer.
		w.run("ip", "-n", h.NS, "link", "add", "hwvx", "type", "vxlan", "id", "4097", "dstport", "4790",
			"local", h.Addr, "dev", "eth0", "nolearning")
		w.run("ip", "-n", h.NS, "link", "set", "hwvx", "address", fmt.Sprintf("66:99:00:00:00:%02d", i), "mtu", "1450", "up")
		w.run("ip", "-n", h.NS, "addr", "add", fmt.Sprintf("10.79.0.%d/32", i), "dev", "hwvx")
		peerMAC := fmt.Sprintf("66:99:00:00:00:%02d", 1-i)
		w.run("ip", "-n", h.NS, "neigh", "replace", fmt.Sprintf("10.79.0.%d", 1-i), "lladdr", peerMAC, "dev", "hwvx", "nud", "permanent")
		w.run("ip", "netns", "exec", h.NS, "bridge", "fdb", "append", peerMAC, "dev", "hwvx", "dst", peer.Addr)
		for _, vx := range []bool{false, true} {
			ns, hostIf, mtu := w.ns(i, vx), fmt.Sprintf("hwv%d", map[bool]int{false: 0, true: 1}[vx]), "1500"
			if vx {
				mtu = "1450"
			}
			w.run("ip", "netns", "add", ns)
			w.run("ip", "-n", h.NS, "link", "add", hostIf, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns)
			w.run("ip", "netns", "exec", h.NS, "sysctl", "-qw", "net.ipv4.conf."+hostIf+".proxy_arp=1", "net.ipv4.neigh."+hostIf+".proxy_delay=0")
			w.run("ip", "-n", h.NS, "link", "set", hostIf, "up")
			w.run("ip", "-n", ns, "link", "set", "lo", "up")
			w.run("ip", "-n", ns, "link", "set", "eth0", "up")
			w.run("ip", "-n", ns, "addr", "add", w.addr(i, vx)+"/32", "dev", "eth0")
			w.run("ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
			w.run("ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
			w.run("ip", "-n", h.NS, "route", "add", w.addr(i, vx), "dev", hostIf, "scope", "link")
			if vx {
				w.run("ip", "-n", h.NS, "route", "add", w.addr(1-i, vx), "via", fmt.Sprintf("10.79.0.%d", 1-i), "dev", "hwvx", "onlink")
			} else {
				w.run("ip", "-n", h.NS, "route", "add", w.addr(1-i, vx), "via", peer.Addr)
			}
		}
	}
	// The machine's limit: the two host namespaces over one veth.
	w.run("ip", "-n", h0.NS, "link", "add", "hwd0", "type", "veth", "peer", "name", "hwd1", "netns", h1.NS)
	for i, h := range w.hosts {
		w.run("ip", "-n", h.NS, "addr", "add", w.directAddr(i)+"/30", "dev", fmt.Sprintf("hwd%d", i))
		w.run("ip", "-n", h.NS, "link", "set", fmt.Sprintf("hwd%d", i), "up")
	}
	return w
}

// close removes everything newHandWired made; what is gone already is fine.
func (w *handWired) close() {
	for i, h := range w.hosts {
		for _, dir := range []string{"-i", "-o"} {
			exec.Command("ip", "netns", "exec", h.NS, "iptables", "-D", "FORWARD", dir, "hwv+", "-j", "ACCEPT").Run()
		}
		exec.Command("ip", "-n", h.NS, "route", "del", w.addr(1-i, false)).Run()
		for _, link := range []string{"hwvx", "hwv0", "hwv1", "hwd0"} {
			exec.Command("ip", "-n", h.NS, "link", "del", link).Run()
		}
		for _, vx := range []bool{false, true} {
			exec.Command("ip", "netns", "del", w.ns(i, vx)).Run()
		}
	}
}
