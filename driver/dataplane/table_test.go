package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// routes77 is what `ip route` shows of tabby's routes in ns.
func routes77(t *testing.T, ns string) string {
	t.Helper()
	return inNS(t, ns, "ip", "route", "show", "proto", "77")
}

// The table merges what the driver and BGP want for one destination: a
// tunnel beats the plain learned route, the learned one comes back when the
// tunnel lets go, and nothing shows through while both are claimed.
func TestTableMergesClaimsByKind(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	tb := d.Table()
	block := netip.MustParsePrefix("10.244.9.0/26")
	gw := netip.MustParseAddr("10.2.0.2")
	if err := tb.Learn([]netip.Prefix{block}, []netip.Addr{gw}); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "10.244.9.0/26 via 10.2.0.2 dev uplink" {
		t.Fatalf("learned route: %q", r)
	}
	// A dummy device stands in for vxlan.tabby: the table takes any link.
	inNS(t, ns, "ip", "link", "add", "tun9", "type", "veth", "peer", "name", "tun9p")
	inNS(t, ns, "ip", "link", "set", "tun9p", "up")
	inNS(t, ns, "ip", "link", "set", "tun9", "up")
	idx := d.LinkIndex("tun9")
	tunnelGw := netip.MustParseAddr("192.168.9.0")
	if err := tb.Sync(KindVXLAN, []Route{{Dst: block, Gw: tunnelGw, Link: idx}}); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "10.244.9.0/26 via 192.168.9.0 dev tun9 onlink" {
		t.Fatalf("the tunnel must take the block from BGP: %q", r)
	}
	if n := tb.Learned(); n != 1 { // BGP's claim stands under the tunnel's
		t.Fatalf("Learned() = %d under a tunnel, want 1", n)
	}
	// BGP learning it again (a peer's refresh) does not take it back.
	if err := tb.Learn([]netip.Prefix{block}, []netip.Addr{gw}); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); !strings.Contains(r, "dev tun9") {
		t.Fatalf("a refreshed learned route replaced the tunnel's: %q", r)
	}
	if err := tb.Sync(KindVXLAN, nil); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "10.244.9.0/26 via 10.2.0.2 dev uplink" {
		t.Fatalf("once the tunnel lets go, BGP's route must be back: %q", r)
	}
	// A block of this host: its blackhole beats what a peer says of it.
	if err := tb.Sync(KindBlackhole, []Route{{Dst: block}}); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "blackhole 10.244.9.0/26" {
		t.Fatalf("the blackhole must win: %q", r)
	}
	if err := tb.Sync(KindBlackhole, nil); err != nil {
		t.Fatal(err)
	}
	if err := tb.Unlearn(block); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "" {
		t.Fatalf("routes left once nobody claims them: %q", r)
	}
	if err := tb.Unlearn(block); err != nil {
		t.Fatalf("unlearning what is gone must succeed: %v", err)
	}
	if n := tb.Learned(); n != 0 {
		t.Fatalf("Learned() = %d once BGP let go, want 0", n)
	}
}

// An endpoint's route goes with its interface; what else claims that
// destination takes it.
func TestTableLetsGoOfADeletedLink(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	ip := netip.MustParseAddr("10.244.9.5")
	ep := Endpoint{HostIf: HostIfName(epID), TempIf: TempIfName(epID), IPv4: ip, MTU: 1500}
	if err := d.SetupEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	host := netip.PrefixFrom(ip, 32)
	if err := d.Table().Learn([]netip.Prefix{host}, []netip.Addr{netip.MustParseAddr("10.2.0.2")}); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); !strings.HasPrefix(r, "10.244.9.5 dev "+ep.HostIf+" scope link") {
		t.Fatalf("the endpoint must win its own address: %q", r)
	}
	if err := d.DeleteLink(ep.HostIf); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); r != "10.244.9.5 via 10.2.0.2 dev uplink" {
		t.Fatalf("after the endpoint went, the learned route: %q", r)
	}
	if n := d.Table().Learned(); n != 1 {
		t.Fatalf("Learned() = %d after the endpoint's link went, want 1", n)
	}
	if n, err := d.Table().Repair(); err != nil || n != 0 {
		t.Fatalf("nothing to repair after a deleted link: %d, %v", n, err)
	}
}

// Whatever flushes or edits tabby's routes, Repair puts back the winners;
// a route of a previous run waits until its kind is complete, and a route
// tabby did not make is never touched.
func TestTableRepairsFlushedAndEditedRoutes(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	tb := d.Table()
	gw := netip.MustParseAddr("10.2.0.2")
	stale := "10.250.0.0/26"
	inNS(t, ns, "ip", "route", "add", stale, "via", "10.2.0.3", "proto", "77") // a previous run's
	inNS(t, ns, "ip", "route", "add", "10.251.0.0/24", "via", "10.2.0.4")      // the admin's
	a, b := netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.2.0/26")
	if err := tb.Learn([]netip.Prefix{a, b}, []netip.Addr{gw, gw}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Sync(KindBlackhole, []Route{{Dst: netip.MustParsePrefix("10.244.0.0/26")}}); err != nil {
		t.Fatal(err)
	}
	want := "10.244.1.0/26 via 10.2.0.2 dev uplink \n10.244.2.0/26 via 10.2.0.2 dev uplink \n10.250.0.0/26 via 10.2.0.3 dev uplink \nblackhole 10.244.0.0/26"
	if r := sortedLines(routes77(t, ns)); r != sortedLines(want) {
		t.Fatalf("before the flush:\n%s\nwant\n%s", r, want)
	}
	inNS(t, ns, "ip", "route", "flush", "proto", "77")
	inNS(t, ns, "ip", "route", "add", a.String(), "via", "10.2.0.9", "proto", "77") // edited
	n, err := tb.Repair()
	if err != nil || n != 3 {
		t.Fatalf("Repair = %d, %v; want the two missing and the edited one", n, err)
	}
	if r := sortedLines(routes77(t, ns)); r != sortedLines(strings.ReplaceAll(want, "10.250.0.0/26 via 10.2.0.3 dev uplink \n", "")) {
		t.Fatalf("after Repair:\n%s", r)
	}
	// The stale route (re-added) goes only once BGP says it has caught up.
	inNS(t, ns, "ip", "route", "add", stale, "via", "10.2.0.3", "proto", "77")
	if n, _ := tb.Repair(); n != 0 {
		t.Fatalf("a previous run's learned route must wait for BGP: %d changes", n)
	}
	if err := tb.LearnedSynced(); err != nil {
		t.Fatal(err)
	}
	if r := routes77(t, ns); strings.Contains(r, "10.250.0.0") {
		t.Fatalf("stale route left after BGP caught up:\n%s", r)
	}
	if r := inNS(t, ns, "ip", "route", "show", "10.251.0.0/24"); r != "10.251.0.0/24 via 10.2.0.4 dev uplink" {
		t.Fatalf("the admin's route was touched: %q", r)
	}
}

// Docker's concurrent requests and BGP's installer claim at once while
// the repair loop runs: every claim ends up in the kernel exactly once.
func TestTableUnderConcurrentClaims(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	tb := d.Table()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(w), byte(i)}), 32)
				if err := tb.Learn([]netip.Prefix{p}, []netip.Addr{netip.MustParseAddr("10.2.0.2")}); err != nil {
					t.Error(err)
				}
				if i%2 == 1 {
					if err := tb.Unlearn(p); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			if _, err := tb.Repair(); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	tb.mu.Lock()
	got, want := len(tb.claims), 100
	tb.mu.Unlock()
	if got != want {
		t.Fatalf("claims = %d, want %d", got, want)
	}
	if n := tb.Learned(); n != want {
		t.Fatalf("Learned() = %d, want %d", n, want)
	}
	if via, _ := d.ListVia(); len(via) != 100 {
		t.Fatalf("kernel routes = %d, want 100", len(via))
	}
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
