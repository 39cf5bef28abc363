package ipamdriver

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

func TestCheckFindsLeaksAndDoubles(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/30"), "p", "node00")
	b.Allocations[0] = "docker-aaa"                   // 10.0.0.0: endpoint e1
	b.Allocations[1] = "docker-bbb"                   // 10.0.0.1: nobody -> leaked
	b.Allocations[2] = "vxlan-tunnel-addr-node00"     // a live node's tunnel
	b.Allocations[3] = "ipip-tunnel-addr-gone-node01" // a gone node's tunnel
	eps := []datastore.WorkloadEndpoint{
		{Node: "node00", EndpointID: "e1", IPv4: "10.0.0.0"},
		{Node: "node01", EndpointID: "e2", IPv4: "10.9.9.9"}, // unassigned
		{Node: "node01", EndpointID: "e3", IPv4: "10.0.0.0"}, // duplicate of e1
	}
	got := Check(State{Blocks: []datastore.Block{*b.Block}, Endpoints: eps, Nodes: []datastore.Node{{Name: "node00"}}})
	want := []string{"duplicate 10.0.0.0", "leaked 10.0.0.1", "orphan-tunnel 10.0.0.3", "unassigned 10.9.9.9"}
	if len(got) != len(want) {
		t.Fatalf("findings %v, want %v", got, want)
	}
	for i, f := range got {
		if s := fmt.Sprintf("%s %s", f.Kind, f.IP); s != want[i] {
			t.Errorf("finding %d = %q, want %q", i, s, want[i])
		}
	}
	nodes := []datastore.Node{{Name: "node00"}, {Name: "gone-node01"}}
	if f := Check(State{Blocks: []datastore.Block{*b.Block}, Endpoints: eps[:1], Nodes: nodes}); len(f) != 1 || f[0].Kind != "leaked" || f[0].Handle != "docker-bbb" {
		t.Fatalf("only the leak (of handle docker-bbb) should remain: %v", f)
	}
	aux := []datastore.Network{{ID: "n1", AuxAddresses: []string{"10.0.0.1"}}}
	if f := Check(State{Blocks: []datastore.Block{*b.Block}, Endpoints: eps[:1], Nodes: nodes, Networks: aux}); len(f) != 0 {
		t.Fatalf("a network's --aux-address is no leak: %v", f)
	}
	u := Usage([]datastore.Block{*b.Block})
	if len(u) != 1 || u[0].InUse != 4 || u[0].Size != 4 || u[0].Affinity != "node00" {
		t.Fatalf("usage %+v", u)
	}
}
