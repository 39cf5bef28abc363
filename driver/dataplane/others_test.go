package dataplane

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// sorted returns ps sorted, for comparing sets.
func sorted(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// Protected, once the table follows the kernel's notifications, says what
// a listing of the kernel says: other protocols' routes (connected, static,
// default) and tabby's blackholes are not to be covered, endpoint routes not
// replaced; a route added or removed by someone else shows within moments,
// and when following stops, a listing answers again.
func TestTableFollowsOtherProtocolsRoutes(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	uplink(t, ns)
	tb := d.Table()
	inNS(t, ns, "ip", "link", "add", "cali0001", "type", "veth", "peer", "name", "cali0001p")
	inNS(t, ns, "ip", "link", "set", "cali0001", "up")
	ep := netip.MustParsePrefix("10.244.1.7/32")
	if err := tb.Set(Route{Kind: KindEndpoint, Dst: ep, Link: d.LinkIndex("cali0001")}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Sync(KindBlackhole, []Route{{Dst: netip.MustParsePrefix("10.244.1.0/26")}}); err != nil {
		t.Fatal(err)
	}
	inNS(t, ns, "ip", "route", "add", "default", "via", "10.2.0.254")
	agree := func(when string) {
		t.Helper()
		wantCover, wantReplace, err := d.Protected()
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			cover, replace, err := tb.Protected()
			if err != nil {
				t.Fatal(err)
			}
			if slices.Equal(sorted(cover), sorted(wantCover)) && slices.Equal(sorted(replace), sorted(wantReplace)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Protected says %v / %v, the kernel %v / %v", when, sorted(cover), sorted(replace), sorted(wantCover), sorted(wantReplace))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	agree("before following")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tb.Follow(ctx, func(err error) { t.Errorf("following stopped: %v", err) })
	}()
	defer func() { cancel(); wg.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := tb.others.prefixes(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not following the kernel's routes 5 s after Follow")
		}
	}
	agree("following")
	inNS(t, ns, "ip", "route", "add", "10.77.0.0/16", "via", "10.2.0.9")
	inNS(t, ns, "ip", "-6", "route", "add", "fd77::/64", "dev", "uplink")
	agree("after someone added routes")
	if cover, _, _ := tb.Protected(); !slices.Contains(cover, netip.MustParsePrefix("10.77.0.0/16")) {
		t.Fatalf("a static route added while following is not protected: %v", cover)
	}
	inNS(t, ns, "ip", "route", "del", "10.77.0.0/16")
	inNS(t, ns, "ip", "route", "del", "default")
	agree("after someone removed routes")
	// tabby's own learned routes are in neither list.
	if err := tb.Learn([]netip.Prefix{netip.MustParsePrefix("10.244.2.0/26")}, []netip.Addr{netip.MustParseAddr("10.2.0.3")}); err != nil {
		t.Fatal(err)
	}
	agree("with a learned route")

	cancel()
	wg.Wait()
	if _, ok := tb.others.prefixes(); ok {
		t.Fatal("still reading followed routes after Follow ended")
	}
	inNS(t, ns, "ip", "route", "add", "10.78.0.0/16", "via", "10.2.0.9")
	agree("after following stopped")
}
