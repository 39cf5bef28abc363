package dns

import (
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

func TestLookupSharesNetworksOnly(t *testing.T) {
	eps := []datastore.WorkloadEndpoint{
		{Workload: "containerA", IPv4: "10.0.0.1", Labels: map[string]string{"n": "net1"}},
		{Workload: "containerC", IPv4: "10.0.1.3", IPv6: "fd00::3", Labels: map[string]string{"n": "net1"}},
		{Workload: "containerD", IPv4: "10.0.1.4", Labels: map[string]string{"n": "net2"}},
		{Workload: "multi", IPv4: "10.0.2.1", Labels: map[string]string{"n": "net1"}},
		{Workload: "multi", IPv4: "10.0.2.2", Labels: map[string]string{"n": "net2"}},
		{IPv4: "10.0.9.9", Labels: map[string]string{"n": "net1"}}, // name not known yet
	}
	eps[0].Node = "node00"
	ix := NewIndex(eps, func(e datastore.WorkloadEndpoint) string { return e.Labels["n"] }, "node00")
	if !ix.Local(netip.MustParseAddr("10.0.0.1")) || ix.Local(netip.MustParseAddr("10.0.1.3")) || ix.Local(netip.MustParseAddr("192.0.2.1")) {
		t.Error("only node00's endpoints are local")
	}
	a := netip.MustParseAddr("10.0.0.1")
	cases := []struct {
		q       string
		want    []string
		cluster bool
	}{
		{"containerC.", []string{"10.0.1.3", "fd00::3"}, true},
		{"CONTAINERC.net1.", []string{"10.0.1.3", "fd00::3"}, true},
		{"containerC.net2.", nil, false},
		{"containerD.", nil, true}, // exists, on a network A is not on
		{"multi.", []string{"10.0.2.1"}, true},
		{"multi.net2.", nil, true},
		{"example.com.", nil, false},
	}
	for _, c := range cases {
		got, cluster := ix.Lookup(a, c.q)
		if cluster != c.cluster || len(got) != len(c.want) {
			t.Errorf("%s: got %v cluster=%v, want %v cluster=%v", c.q, got, cluster, c.want, c.cluster)
			continue
		}
		for i := range got {
			if got[i].String() != c.want[i] {
				t.Errorf("%s: got %v, want %v", c.q, got, c.want)
			}
		}
	}
	// containerD, of another host, is not one who asks here.
	if got, _ := ix.Lookup(netip.MustParseAddr("10.0.1.4"), "containerD"); len(got) != 0 {
		t.Errorf("an asker of another host got %v", got)
	}
	eps[2].Node = "node00"
	ix = NewIndex(eps, func(e datastore.WorkloadEndpoint) string { return e.Labels["n"] }, "node00")
	if got, _ := ix.Lookup(netip.MustParseAddr("10.0.1.4"), "containerD"); len(got) != 1 {
		t.Errorf("containerD finds itself: %v", got)
	}
}

// A service name (an alias every replica has) answers with each replica
// on the asker's network, on whichever host, and with none on another.
func TestAliasesNameEveryReplica(t *testing.T) {
	eps := []datastore.WorkloadEndpoint{
		{Node: "node00", Workload: "shop-web-1", Aliases: []string{"web"}, IPv4: "10.0.0.1", Labels: map[string]string{"n": "front"}},
		{Node: "node01", Workload: "shop-web-1", Aliases: []string{"web"}, IPv4: "10.0.1.1", Labels: map[string]string{"n": "front"}},
		{Node: "node00", Workload: "shop-client-1", Aliases: []string{"client"}, IPv4: "10.0.0.9", Labels: map[string]string{"n": "front"}},
		{Node: "node01", Workload: "other-web-1", Aliases: []string{"web"}, IPv4: "10.0.2.1", Labels: map[string]string{"n": "back"}},
	}
	ix := NewIndex(eps, func(e datastore.WorkloadEndpoint) string { return e.Labels["n"] }, "node00")
	got, cluster := ix.Lookup(netip.MustParseAddr("10.0.0.9"), "web.")
	if !cluster || len(got) != 2 || got[0].String() != "10.0.0.1" || got[1].String() != "10.0.1.1" {
		t.Fatalf("web from the client: %v (cluster %v), want both front replicas", got, cluster)
	}
	if got, _ := ix.Lookup(netip.MustParseAddr("10.0.0.9"), "web.back."); len(got) != 0 {
		t.Fatalf("web.back from a front container: %v, want nothing", got)
	}
}

// The index follows changes entry by entry: a renamed container answers
// by its new name only, a removed one not at all, and a replica's removal
// leaves the others of its service.
func TestIndexFollowsChanges(t *testing.T) {
	net := func(e datastore.WorkloadEndpoint) string { return e.Labels["n"] }
	ix := NewIndex(nil, net, "node00")
	lbl := map[string]string{"n": "front"}
	asker := datastore.WorkloadEndpoint{Node: "node00", Workload: "client", IPv4: "10.0.0.9", Labels: lbl}
	ix.Set("k-client", asker)
	ix.Set("k-a", datastore.WorkloadEndpoint{Node: "node01", Workload: "web-1", Aliases: []string{"web"}, IPv4: "10.0.1.1", Labels: lbl})
	ix.Set("k-b", datastore.WorkloadEndpoint{Node: "node02", Workload: "web-2", Aliases: []string{"web"}, IPv4: "10.0.2.1", Labels: lbl})
	a := netip.MustParseAddr("10.0.0.9")
	look := func(q string) int { got, _ := ix.Lookup(a, q); return len(got) }
	if look("web") != 2 || look("web-1") != 1 {
		t.Fatalf("service web: %d answers, web-1: %d", look("web"), look("web-1"))
	}
	ix.Set("k-a", datastore.WorkloadEndpoint{Node: "node01", Workload: "web-9", Aliases: []string{"web"}, IPv4: "10.0.1.1", Labels: lbl})
	if look("web-1") != 0 || look("web-9") != 1 || look("web") != 2 {
		t.Fatalf("after a rename: web-1 %d, web-9 %d, web %d", look("web-1"), look("web-9"), look("web"))
	}
	ix.Delete("k-b")
	ix.Delete("k-b")
	if look("web") != 1 || look("web-2") != 0 {
		t.Fatalf("after a replica went: web %d, web-2 %d", look("web"), look("web-2"))
	}
	ix.Delete("k-client")
	if ix.Local(a) {
		t.Fatal("a removed local endpoint still counts as this host's container")
	}
	if len(ix.byKey) != 1 || len(ix.byAddr) != 0 || len(ix.byName) != 2 || len(ix.shared) != 0 {
		t.Fatalf("entries left behind: %d endpoints, %d local addresses, %d names, %d shared names",
			len(ix.byKey), len(ix.byAddr), len(ix.byName), len(ix.shared))
	}
}
