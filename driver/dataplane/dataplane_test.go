package dataplane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testNS creates a network namespace for one test and removes it after.
func testNS(t *testing.T) (name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name = "tabbyt-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func inNS(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newDP(t *testing.T, ns string) *Dataplane {
	t.Helper()
	d, err := New("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

const epID = "0123456789abcdef0123456789abcdef"

func TestSetupEndpointHostSide(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	ep := Endpoint{HostIf: HostIfName(epID), TempIf: TempIfName(epID), IPv4: netip.MustParseAddr("192.168.18.64"), MTU: 1500}
	if ep.HostIf != "cali0123456789a" || len(ep.HostIf) != 15 {
		t.Fatalf("host interface name %q, want cali + 11 hex digits", ep.HostIf)
	}
	if err := d.SetupEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	if got := inNS(t, ns, "cat", "/proc/sys/net/ipv4/conf/"+ep.HostIf+"/proxy_arp"); got != "1" {
		t.Fatalf("proxy_arp = %s, want 1", got)
	}
	if got := inNS(t, ns, "cat", "/proc/sys/net/ipv4/neigh/"+ep.HostIf+"/proxy_delay"); got != "0" {
		t.Fatalf("proxy_delay = %s, want 0", got)
	}
	routes := inNS(t, ns, "ip", "route", "show", "proto", "77")
	if !strings.Contains(routes, "192.168.18.64 dev "+ep.HostIf+" scope link") {
		t.Fatalf("routes %q lack `192.168.18.64 dev %s scope link`", routes, ep.HostIf)
	}
	if link := inNS(t, ns, "ip", "-o", "link", "show", ep.HostIf); !strings.Contains(link, ",UP") && !strings.Contains(link, "state UP") && !strings.Contains(link, "<BROADCAST,MULTICAST,UP") {
		t.Fatalf("host side is not up: %s", link)
	}
	// Setting up the same endpoint again (a retried Join) replaces it cleanly.
	if err := d.SetupEndpoint(ep); err != nil {
		t.Fatalf("second setup: %v", err)
	}
	if err := d.DeleteLink(ep.HostIf); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteLink(ep.HostIf); err != nil {
		t.Fatalf("deleting a gone link must succeed: %v", err)
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, "cali") || strings.Contains(out, "tmp") {
		t.Fatalf("links left after delete: %s", out)
	}
	if out := inNS(t, ns, "ip", "route", "show", "proto", "77"); out != "" {
		t.Fatalf("routes left after delete: %s", out)
	}
}

// A dual-stack endpoint: the /128 is routed to the host side, which carries
// the containers' IPv6 gateway fe80::1; a container behind it reaches an
// address outside over that gateway.
func TestSetupEndpointIPv6(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	inNS(t, ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	ep := Endpoint{HostIf: HostIfName(epID), TempIf: TempIfName(epID), IPv4: netip.MustParseAddr("192.168.18.64"),
		IPv6: netip.MustParseAddr("fd00:192:168::40"), MTU: 1500}
	if err := d.SetupEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	if r := inNS(t, ns, "ip", "-6", "route", "show", "proto", "77"); !strings.Contains(r, "fd00:192:168::40 dev "+ep.HostIf) {
		t.Fatalf("IPv6 routes %q lack fd00:192:168::40 dev %s", r, ep.HostIf)
	}
	if a := inNS(t, ns, "ip", "-6", "addr", "show", "dev", ep.HostIf); !strings.Contains(a, "inet6 fe80::1/64") {
		t.Fatalf("host side lacks the gateway fe80::1/64:\n%s", a)
	}
	// Play the container: a namespace with the other end, as Docker sets it.
	ctr := testNS(t)
	inNS(t, ns, "ip", "link", "set", ep.TempIf, "netns", ctr)
	inNS(t, ctr, "ip", "link", "set", ep.TempIf, "up")
	inNS(t, ctr, "ip", "addr", "add", "fd00:192:168::40/128", "dev", ep.TempIf, "nodad")
	inNS(t, ctr, "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", ep.TempIf)
	inNS(t, ns, "ip", "addr", "add", "fd00:99::1/128", "dev", "lo")
	inNS(t, ns, "ip", "link", "set", "lo", "up")
	if out, err := exec.Command("ip", "netns", "exec", ctr, "busybox", "ping", "-6", "-c", "1", "-W", "3", "fd00:99::1").CombinedOutput(); err != nil {
		t.Fatalf("container side cannot reach the host over fe80::1: %v\n%s", err, out)
	}
	// Repair after a restart restores the gateway address.
	inNS(t, ns, "ip", "addr", "del", "fe80::1/64", "dev", ep.HostIf)
	if err := d.RepairEndpoint(ep.HostIf, ep.IPv4, ep.IPv6); err != nil {
		t.Fatal(err)
	}
	if a := inNS(t, ns, "ip", "-6", "addr", "show", "dev", ep.HostIf); !strings.Contains(a, "inet6 fe80::1/64") {
		t.Fatalf("repair did not restore fe80::1/64:\n%s", a)
	}
}

func TestSetupEndpointUndoesOnFailure(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	d.failAfterLink = errors.New("injected")
	ep := Endpoint{HostIf: HostIfName(epID), TempIf: TempIfName(epID), IPv4: netip.MustParseAddr("10.0.0.1")}
	if err := d.SetupEndpoint(ep); err == nil {
		t.Fatal("injected failure not returned")
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, "cali") || strings.Contains(out, "tmp") {
		t.Fatalf("failed setup left links behind: %s", out)
	}
	d.failAfterLink = nil
	if err := d.SetupEndpoint(Endpoint{HostIf: "cali0000000000b", TempIf: "tmp0000000000b"}); err == nil {
		t.Fatal("an endpoint without an IPv4 address must be refused")
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, "cali") {
		t.Fatalf("refused setup left links behind: %s", out)
	}
}

func TestBlackholeAndRouteListing(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	block := netip.MustParsePrefix("192.168.18.64/26")
	for i := 0; i < 2; i++ { // claiming twice changes nothing
		if err := d.Table().Sync(KindBlackhole, []Route{{Dst: block}}); err != nil {
			t.Fatal(err)
		}
	}
	if out := inNS(t, ns, "ip", "route", "show", "proto", "77"); out != "blackhole 192.168.18.64/26" {
		t.Fatalf("routes = %q, want the block's blackhole", out)
	}
	if rs, err := d.tabbyRoutes(); err != nil || len(rs) != 1 || !rs[0].blackhole || rs[0].dst != block {
		t.Fatalf("tabbyRoutes() = %v, %v; want the one blackhole", rs, err)
	}
	for i := 0; i < 2; i++ { // removing what is gone succeeds
		if err := d.Table().RemoveAll(KindBlackhole); err != nil {
			t.Fatal(err)
		}
	}
	if out := inNS(t, ns, "ip", "route", "show", "proto", "77"); out != "" {
		t.Fatalf("routes after RemoveAll = %q", out)
	}
}

// testForwarding returns Forwarding bound to ns, with a /proc of its own
// whose ip_forward starts at ipForward.
func testForwarding(t *testing.T, ns, ipForward string) (*Forwarding, string) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs the iptables binary: " + err.Error())
	}
	dir := t.TempDir()
	// go-iptables runs a binary; wrappers run it inside the test namespace.
	for _, bin := range []string{"iptables", "ip6tables"} {
		os.WriteFile(filepath.Join(dir, bin), []byte("#!/bin/sh\nexec ip netns exec "+ns+" "+bin+" \"$@\"\n"), 0o755)
	}
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "sys/net/ipv4"), 0o755)
	os.MkdirAll(filepath.Join(proc, "sys/net/ipv6/conf/all"), 0o755)
	os.WriteFile(filepath.Join(proc, "sys/net/ipv4/ip_forward"), []byte(ipForward+"\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "sys/net/ipv6/conf/all/forwarding"), []byte(ipForward+"\n"), 0o644)
	f, err := NewForwarding(filepath.Join(dir, "iptables"), proc, true)
	if err != nil {
		t.Fatal(err)
	}
	return f, proc
}

func TestForwardingRules(t *testing.T) {
	ns := testNS(t)
	f, proc := testForwarding(t, ns, "0")
	inNS(t, ns, "iptables", "-P", "FORWARD", "DROP")
	for i := 0; i < 2; i++ {
		if err := f.Ensure(); err != nil {
			t.Fatal(err)
		}
	}
	for _, sw := range []string{"sys/net/ipv4/ip_forward", "sys/net/ipv6/conf/all/forwarding"} {
		if b, _ := os.ReadFile(filepath.Join(proc, sw)); strings.TrimSpace(string(b)) != "1" {
			t.Fatalf("%s = %q, want 1", sw, b)
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		fwd := inNS(t, ns, bin, "-S", "FORWARD")
		if strings.Count(fwd, "-j "+ForwardChain) != 1 {
			t.Fatalf("%s: FORWARD should jump to %s exactly once:\n%s", bin, ForwardChain, fwd)
		}
		chain := inNS(t, ns, bin, "-S", ForwardChain)
		for _, want := range []string{"-i cali+", "-o cali+", "--mark 0x100000/0x100000"} {
			if !strings.Contains(chain, want) || strings.Count(chain, "-j ACCEPT") != len(acceptRule) {
				t.Fatalf("%s: %s lacks %q ACCEPT:\n%s", bin, ForwardChain, want, chain)
			}
		}
	}
	for i := 0; i < 2; i++ {
		if err := f.Remove(); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		if out := inNS(t, ns, bin, "-S"); strings.Contains(out, ForwardChain) {
			t.Fatalf("%s rules left after Remove:\n%s", bin, out)
		}
	}
}

func TestLearnInBatches(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	var dst []netip.Prefix
	var gw []netip.Addr
	for i := 0; i < 600; i++ { // more than two sendmsg chunks
		dst = append(dst, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128, byte(i / 4), byte(i%4) * 64}), 26))
		gw = append(gw, netip.MustParseAddr("10.2.0.2"))
	}
	// One route whose gateway is unreachable fails alone, named in the error.
	dst = append(dst, netip.MustParsePrefix("10.9.9.0/24"))
	gw = append(gw, netip.MustParseAddr("10.3.0.2"))
	err := d.Table().Learn(dst, gw)
	if err == nil || !strings.Contains(err.Error(), "learned 10.9.9.0/24 via 10.3.0.2") {
		t.Fatalf("the unreachable gateway must be reported: %v", err)
	}
	got, err := d.ListVia()
	if err != nil || len(got) != 600 {
		t.Fatalf("ListVia = %d routes, %v; want 600", len(got), err)
	}
	if got[dst[599]] != gw[599] {
		t.Fatalf("route %s via %s missing", dst[599], gw[599])
	}
	if out := inNS(t, ns, "ip", "route", "show", "10.128.0.64/26"); out != "10.128.0.64/26 via 10.2.0.2 dev uplink proto 77" {
		t.Fatalf("route as ip shows it: %q", out)
	}
	if err := d.Table().Learn(dst[:600], gw[:600]); err != nil {
		t.Fatalf("learning again must succeed: %v", err)
	}
	// IPv6 blocks go in the same batch.
	inNS(t, ns, "ip", "addr", "add", "fd00:2::1/64", "dev", "uplink", "nodad")
	v6 := netip.MustParsePrefix("fd00:192:168::40/122")
	if err := d.Table().Learn([]netip.Prefix{v6, dst[0]}, []netip.Addr{netip.MustParseAddr("fd00:2::2"), gw[0]}); err != nil {
		t.Fatal(err)
	}
	if out := inNS(t, ns, "ip", "-6", "route", "show", v6.String()); !strings.HasPrefix(out, "fd00:192:168::40/122 via fd00:2::2 dev uplink proto 77") {
		t.Fatalf("IPv6 route as ip shows it: %q", out)
	}
	if err := d.Table().Learn([]netip.Prefix{v6}, []netip.Addr{gw[0]}); err == nil || !strings.Contains(err.Error(), "one family") {
		t.Fatalf("mixed families must be refused: %v", err)
	}
	if err := d.Table().Unlearn(v6); err != nil {
		t.Fatal(err)
	}
	if out := inNS(t, ns, "ip", "-6", "route", "show", v6.String()); out != "" {
		t.Fatalf("IPv6 route left after Unlearn: %q", out)
	}
}

// uplink gives ns a link with 10.2.0.1/24, 10.2.0.2 a next hop on it.
func uplink(t *testing.T, ns string) {
	t.Helper()
	inNS(t, ns, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplinkp")
	inNS(t, ns, "ip", "addr", "add", "10.2.0.1/24", "dev", "uplink")
	inNS(t, ns, "ip", "link", "set", "uplinkp", "up")
	inNS(t, ns, "ip", "link", "set", "uplink", "up")
}

// kernelHasIPIP asks iproute2, independently of tabby, whether this
// kernel makes ipip tunnels (in the test's namespace).
func kernelHasIPIP(t *testing.T, ns string) bool {
	// Addresses of its own: an ipip link without them collides with the
	// namespace's fallback tunl0 (EEXIST) where the module is loaded.
	err := exec.Command("ip", "-n", ns, "link", "add", "oracle0", "type", "ipip", "local", "192.0.2.1", "remote", "192.0.2.2").Run()
	exec.Command("ip", "-n", ns, "link", "del", "oracle0").Run()
	return err == nil
}

// skipForKernel skips a test for a module this kernel lacks; in the guest
// of make test-kernel (TABBY_GUEST=1), whose kernel has it, it fails.
func skipForKernel(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("TABBY_GUEST") != "" {
		t.Fatal("the guest kernel must have what this test needs: " + why)
	}
	t.Skip(why + " (make test-kernel runs it on a kernel that has it)")
}

func TestIPIPSupportMatchesTheKernel(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	// tabby asks first: on a fresh kernel (make test-kernel's guest) its
	// probe is what loads the module, a case the oracle would hide.
	err := d.IPIPSupported()
	has := kernelHasIPIP(t, ns)
	if has {
		if err != nil {
			t.Fatalf("this kernel has ipip, yet IPIPSupported says %v", err)
		}
	} else if err == nil || !errors.Is(err, ErrNoIPIP) || !strings.Contains(err.Error(), "ipip module") {
		t.Fatalf("without the ipip module the error must name it: %v", err)
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, ipipProbe) {
		t.Fatalf("the probe tunnel was left behind: %s", out)
	}
}

func TestNATRules(t *testing.T) {
	pools := []NATPool{
		{CIDR: netip.MustParsePrefix("192.168.0.0/16"), NAT: true},
		{CIDR: netip.MustParsePrefix("10.10.0.0/16"), NAT: false},
	}
	pools = append(pools, NATPool{CIDR: netip.MustParsePrefix("fd00:1::/48"), NAT: true}, NATPool{CIDR: netip.MustParsePrefix("fd00:2::/48")})
	got := natRules(pools, false)
	want := [][]string{
		{"-s", "192.168.0.0/16", "-d", "192.168.0.0/16", "-j", "RETURN"},
		{"-s", "192.168.0.0/16", "-d", "10.10.0.0/16", "-j", "RETURN"},
		{"-s", "192.168.0.0/16", "-j", "MASQUERADE"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rules %v, want %v", got, want)
	}
	got = natRules(pools, true)
	want = [][]string{
		{"-s", "fd00:1::/48", "-d", "fd00:1::/48", "-j", "RETURN"},
		{"-s", "fd00:1::/48", "-d", "fd00:2::/48", "-j", "RETURN"},
		{"-s", "fd00:1::/48", "-j", "MASQUERADE"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("IPv6 rules %v, want %v", got, want)
	}
}

func TestForwardingEnsureKeepsRulesAndDropsStaleOnes(t *testing.T) {
	ns := testNS(t)
	f, _ := testForwarding(t, ns, "1")
	if err := f.Ensure(); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, "iptables", "-A", ForwardChain, "-s", "10.9.9.9/32", "-j", "ACCEPT") // stale
	before := inNS(t, ns, "iptables", "-S", ForwardChain)
	if err := f.Ensure(); err != nil {
		t.Fatal(err)
	}
	after := inNS(t, ns, "iptables", "-S", ForwardChain)
	if strings.Contains(after, "10.9.9.9") || strings.Count(after, "-j ACCEPT") != len(acceptRule) {
		t.Fatalf("Ensure must keep its rules and drop the stale one:\n%s\n(before: %s)", after, before)
	}
}

// A swarm overlay network's VXLAN device holding VNI 4096 on UDP 4789:
// one error naming the clash and the way out, no vxlan.tabby left.
func TestVXLANWhereTheVNIIsTaken(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	inNS(t, ns, "ip", "link", "add", "vx-4096", "type", "vxlan", "id", "4096", "dstport", "4789", "nolearning")
	mac, _ := net.ParseMAC("66:00:00:00:00:01")
	_, err := d.EnsureVXLAN(VTEP{HostIP: netip.MustParseAddr("10.2.0.1"), TunnelIP: netip.MustParseAddr("192.168.5.0"), MAC: mac}, 1450)
	if err == nil || !strings.Contains(err.Error(), "--data-path-port") || !strings.Contains(err.Error(), "VNI 4096 on UDP 4789") {
		t.Fatalf("EnsureVXLAN beside another device on VNI 4096: %v", err)
	}
	if out := inNS(t, ns, "ip", "-o", "link", "show"); strings.Contains(out, VXLANDevice) {
		t.Fatalf("%s left behind:\n%s", VXLANDevice, out)
	}
}

func TestVXLANDevicePeersAndRoutes(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	mac, _ := net.ParseMAC("66:00:00:00:00:01")
	peerMAC, _ := net.ParseMAC("66:00:00:00:00:02")
	self := VTEP{HostIP: netip.MustParseAddr("10.2.0.1"), TunnelIP: netip.MustParseAddr("192.168.5.0"), MAC: mac}
	idx, err := d.EnsureVXLAN(self, 1450)
	if err != nil {
		t.Fatal(err)
	}
	if idx2, err := d.EnsureVXLAN(self, 1450); err != nil || idx2 != idx {
		t.Fatalf("EnsureVXLAN is not idempotent: %d %d %v", idx, idx2, err)
	}
	link := inNS(t, ns, "ip", "-d", "addr", "show", VXLANDevice)
	for _, want := range []string{"mtu 1450", "link/ether 66:00:00:00:00:01", "vxlan id 4096", "dstport 4789", "inet 192.168.5.0/32"} {
		if !strings.Contains(link, want) {
			t.Fatalf("%s lacks %q:\n%s", VXLANDevice, want, link)
		}
	}
	peer := VTEP{HostIP: netip.MustParseAddr("10.2.0.2"), TunnelIP: netip.MustParseAddr("192.168.9.0"), MAC: peerMAC}
	if err := d.SyncVXLANPeers(idx, []VTEP{peer}); err != nil {
		t.Fatal(err)
	}
	if n := inNS(t, ns, "ip", "neigh", "show", "dev", VXLANDevice); !strings.Contains(n, "192.168.9.0 lladdr 66:00:00:00:00:02 PERMANENT") {
		t.Fatalf("ARP entry missing: %s", n)
	}
	if f := inNS(t, ns, "bridge", "fdb", "show", "dev", VXLANDevice); !strings.Contains(f, "66:00:00:00:00:02 dst 10.2.0.2 self permanent") {
		t.Fatalf("FDB entry missing: %s", f)
	}
	block := netip.MustParsePrefix("10.244.9.0/26")
	if err := d.Table().Sync(KindVXLAN, []Route{{Dst: block, Gw: peer.TunnelIP, Link: idx}}); err != nil {
		t.Fatal(err)
	}
	if r := inNS(t, ns, "ip", "route", "show", "proto", "77"); !strings.Contains(r, "10.244.9.0/26 via 192.168.9.0 dev vxlan.tabby onlink") {
		t.Fatalf("VXLAN route missing: %s", r)
	}
	if via, _ := d.ListVia(); len(via) != 0 {
		t.Fatalf("ListVia must leave VXLAN routes to the VXLAN dataplane: %v", via)
	}
	if err := d.SyncVXLANPeers(idx, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Table().Sync(KindVXLAN, nil); err != nil {
		t.Fatal(err)
	}
	if n := inNS(t, ns, "ip", "neigh", "show", "dev", VXLANDevice); n != "" {
		t.Fatalf("ARP entries left: %s", n)
	}
	if r := inNS(t, ns, "ip", "route", "show", "proto", "77"); r != "" {
		t.Fatalf("routes left: %s", r)
	}
	if err := d.DeleteLink(VXLANDevice); err != nil {
		t.Fatal(err)
	}
}

func TestIPIPDevice(t *testing.T) {
	ns := testNS(t)
	if !kernelHasIPIP(t, ns) {
		skipForKernel(t, "this kernel has no ipip module (ip link add type ipip fails)")
	}
	d := newDP(t, ns)
	inNS(t, ns, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplinkp")
	inNS(t, ns, "ip", "addr", "add", "10.2.0.1/24", "dev", "uplink")
	inNS(t, ns, "ip", "link", "set", "uplinkp", "up")
	inNS(t, ns, "ip", "link", "set", "uplink", "up")
	idx, err := d.EnsureIPIP(netip.MustParseAddr("192.168.5.0"), 1480)
	if err != nil {
		t.Fatal(err)
	}
	if l := inNS(t, ns, "ip", "addr", "show", IPIPDevice); !strings.Contains(l, "mtu 1480") || !strings.Contains(l, "inet 192.168.5.0/32") || !strings.Contains(l, "UP") {
		t.Fatalf("tunl0: %s", l)
	}
	block := netip.MustParsePrefix("10.244.9.0/26")
	if err := d.Table().Sync(KindIPIP, []Route{{Dst: block, Gw: netip.MustParseAddr("10.2.0.2"), Link: idx}}); err != nil {
		t.Fatal(err)
	}
	if r := inNS(t, ns, "ip", "route", "show", "proto", "77"); !strings.Contains(r, "10.244.9.0/26 via 10.2.0.2 dev tunl0 onlink") {
		t.Fatalf("IPIP route: %s", r)
	}
	if via, _ := d.ListVia(); len(via) != 0 {
		t.Fatalf("ListVia must leave tunl0's routes to the IPIP dataplane: %v", via)
	}
	if err := d.ClearIPIP(); err != nil {
		t.Fatal(err)
	}
	if r := inNS(t, ns, "ip", "route", "show", "proto", "77"); r != "" {
		t.Fatalf("routes left on tunl0: %s", r)
	}
	if l := inNS(t, ns, "ip", "addr", "show", IPIPDevice); strings.Contains(l, "192.168.5.0") {
		t.Fatalf("address left on tunl0: %s", l)
	}
}
