package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// A BGP peer turns hostile (Debian's gobgpd, as an external BGPPeer whose
// filter accepts everything): it announces a default route, the hosts' own
// subnet and a prefix covering it, both hosts' blocks and two containers'
// /32s. None of it reaches a kernel, containers keep talking across hosts,
// and the peer learns nothing from a host but that host's own prefixes.
func TestSecurityHostileBGPPeer(t *testing.T) {
	const fault = "bgp"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	gobgp := startGoBGPD(t, l, "s3cret")
	// Its BGPFilter, carelessly, accepts everything: what tabby refuses
	// whatever a filter says must still stay out.
	applyYAML(t, l, n0, "tor.yaml", "apiVersion: tabby/v1\nkind: BGPFilter\nmetadata: {name: any}\n"+
		"spec: {importV4: [{action: Accept, matchOperator: In, cidr: 0.0.0.0/0}]}\n---\n"+
		"apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 10.99.0.1, asNumber: 65000, password: s3cret, filters: [any]}\n")
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ipOf(t, n0, "containerA", "net1"), ipOf(t, n1, "containerC", "net1")
	eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })
	eventually(t, 30*time.Second, "the peer learns both blocks", func() (string, bool) {
		out, _ := gobgp("global", "rib")
		return out, strings.Contains(out, blockOf(ipA)) && strings.Contains(out, blockOf(ipC))
	})

	done := make(chan int, 1)
	go func() { lost, _ := pingFor(n0, "containerA", ipC, 60); done <- lost }()
	hostile := []string{"0.0.0.0/0", "10.99.0.0/24", "10.99.0.0/16", blockOf(ipA), blockOf(ipC), ipA + "/32", ipC + "/32"}
	// And one route it may announce, which must arrive: the checks are
	// not refusing everything.
	for _, p := range append(hostile, "10.202.0.0/24") {
		if out, err := gobgp("global", "rib", "add", p, "nexthop", "10.99.0.1"); err != nil {
			t.Fatalf("announce %s from gobgpd: %v %s", p, err, out)
		}
	}
	time.Sleep(5 * time.Second) // routes the hosts take are installed well within this
	for _, h := range []*lab.Host{n0, n1} {
		var got []string
		legit := false
		for _, line := range routesVia(h, "10.99.0.1") {
			if strings.HasPrefix(line, "10.202.0.0/24 via 10.99.0.1 ") {
				legit = true
			} else {
				got = append(got, line)
			}
		}
		report(t, fault, h.Name+": the route the peer may announce is installed", fmt.Sprintf("10.202.0.0/24: %v", legit), legit)
		report(t, fault, h.Name+": routes via the hostile peer in the kernel ("+fmt.Sprint(len(hostile))+" announced)",
			fmt.Sprintf("%d installed", len(got)), len(got) == 0)
		if len(got) > 0 {
			t.Logf("%s installed:\n%s", h.Name, strings.Join(got, "\n"))
		}
	}
	lost := <-done
	report(t, fault, "pings lost across hosts while the peer announces", fmt.Sprintf("%d of 60", lost), lost == 0)
	blocks := map[*lab.Host]string{n0: blockOf(ipA), n1: blockOf(ipC)}
	for h, other := range map[*lab.Host]*lab.Host{n0: n1, n1: n0} {
		out, _ := gobgp("neighbor", h.Addr, "adj-in")
		foreign := strings.Contains(out, blocks[other])
		report(t, fault, "the peer learns from "+h.Name+" only its own prefixes", fmt.Sprintf("%s's block from %s: %v", other.Name, h.Name, foreign), !foreign)
	}
}

// A rogue node: Debian's gobgpd registered as a node (a Node record and a
// live liveness key, so the hosts mesh with it) announces node00's block,
// node01's container's /32 and a pool block nobody claimed. None of it is
// installed and pings across hosts go on; once IPAM gives it two blocks
// side by side, those blocks arrive through it, and not their /25, a /27
// or a /32 inside them.
func TestSecurityRogueNode(t *testing.T) {
	const fault = "bgp"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	st := labStore(t, l)
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ipOf(t, n0, "containerA", "net1"), ipOf(t, n1, "containerC", "net1")
	eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.Put(ctx, datastore.NodeKey("rogue"), &datastore.Node{Name: "rogue", IPv4: "10.99.0.1/24"}); err != nil {
		t.Fatal(err)
	}
	go st.KeepAlive(ctx, datastore.LivenessKey("rogue"), "rogue", func() int64 { return 10 }, nil)
	gobgp := startGoBGPDAs(t, l, 64512, "")
	eventually(t, 30*time.Second, "both hosts mesh with the rogue node", func() (string, bool) {
		out, _ := gobgp("neighbor")
		return out, strings.Count(out, "Establ") == 2
	})
	// A block of the pool nobody has: the last /26 of node00's pool.
	pools, err := datastore.ListAs[datastore.IPPool](ctx, st, datastore.PoolsDir)
	if err != nil || len(pools) == 0 {
		t.Fatalf("pools: %v %v", pools, err)
	}
	pool := netip.MustParsePrefix(pools[0].CIDR)
	last := netip.PrefixFrom(lastAddr(pool), 26).Masked()
	done := make(chan int, 1)
	go func() { lost, _ := pingFor(n0, "containerA", ipC, 40); done <- lost }()
	hostile := []string{blockOf(ipA), blockOf(ipC), ipC + "/32", ipA + "/32", last.String()}
	for _, p := range hostile {
		if out, err := gobgp("global", "rib", "add", p, "nexthop", "10.99.0.1"); err != nil {
			t.Fatalf("announce %s: %v %s", p, err, out)
		}
	}
	time.Sleep(5 * time.Second)
	for _, h := range []*lab.Host{n0, n1} {
		got := routesVia(h, "10.99.0.1")
		report(t, fault, h.Name+": routes via a rogue node ("+fmt.Sprint(len(hostile))+" announced: blocks, /32s, an unclaimed block)",
			fmt.Sprintf("%d installed", len(got)), len(got) == 0)
		if len(got) > 0 {
			t.Logf("%s installed:\n%s", h.Name, strings.Join(got, "\n"))
		}
	}
	lost := <-done
	report(t, fault, "pings lost across hosts while the rogue node announces", fmt.Sprintf("%d of 40", lost), lost == 0)
	// IPAM gives it the unclaimed block and the one beside it: now it may
	// announce both, and nothing else of their /25 (its owner set merges
	// the two blocks into one entry accepting their /26s only).
	sib := netip.PrefixFrom(netip.PrefixFrom(last.Addr(), 25).Masked().Addr(), 26)
	if _, err := st.Get(ctx, datastore.BlockKey(sib.String()), &datastore.Block{}); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("block %s beside %s is taken (%v): the test needs both free", sib, last, err)
	}
	var ops []datastore.Op
	for _, p := range []netip.Prefix{last, sib} {
		b := datastore.Block{CIDR: p.String(), Pool: pools[0].Name, Affinity: "rogue", Allocations: make([]string, 1<<(32-26))}
		ops = append(ops, datastore.Op{Key: datastore.BlockKey(b.CIDR), Value: &b},
			datastore.Op{Key: datastore.AffinityKey("rogue", b.CIDR), Value: &datastore.Affinity{Node: "rogue", Block: b.CIDR}})
	}
	defer func() { // leave nothing of it for the lab's teardown to trip on
		for _, p := range []netip.Prefix{last, sib} {
			st.Delete(ctx, datastore.BlockKey(p.String()))
			st.Delete(ctx, datastore.AffinityKey("rogue", p.String()))
		}
	}()
	if err := st.Commit(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	wider := []string{netip.PrefixFrom(last.Addr(), 25).Masked().String(), netip.PrefixFrom(last.Addr(), 27).String(),
		netip.PrefixFrom(sib.Addr().Next(), 32).String()}
	for _, p := range append([]string{sib.String()}, wider...) {
		if out, err := gobgp("global", "rib", "add", p, "nexthop", "10.99.0.1"); err != nil {
			t.Fatalf("announce %s: %v %s", p, err, out)
		}
	}
	var r string
	granted := false
	for i := 0; i < 20 && !granted; i++ {
		r, _ = n1.Exec("ip", "route", "show", "proto", "77")
		granted = strings.Contains(r, last.String()+" via 10.99.0.1") && strings.Contains(r, sib.String()+" via 10.99.0.1")
		time.Sleep(500 * time.Millisecond)
	}
	report(t, fault, "the two blocks IPAM then gives the rogue node arrive through it", fmt.Sprintf("node01: %q", r), granted)
	time.Sleep(2 * time.Second) // the wider and narrower paths came with them
	for _, h := range []*lab.Host{n0, n1} {
		var got []string
		for _, rt := range routesVia(h, "10.99.0.1") {
			f := strings.Fields(rt)
			if len(f) > 0 && !strings.Contains(f[0], "/") {
				f[0] += "/32" // the kernel shows a host route bare
			}
			if len(f) > 0 && slices.Contains(wider, f[0]) {
				got = append(got, rt)
			}
		}
		report(t, fault, h.Name+": the rogue node's paths around its two blocks ("+strings.Join(wider, ", ")+")",
			fmt.Sprintf("%d installed %v", len(got), got), len(got) == 0)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
