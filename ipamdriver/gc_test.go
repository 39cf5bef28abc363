package ipamdriver

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// The collector releases only this node's Docker addresses that stayed
// unused for the whole grace period; addresses in use, reserved by a
// network, of tunnels, of other nodes, or leaked for less than the grace
// period stay.
func TestCollectorReleasesOnlyOwnLeaksAfterGrace(t *testing.T) {
	for _, withView := range []bool{false, true} {
		t.Run(map[bool]string{false: "etcd", true: "view"}[withView], func(t *testing.T) { testCollector(t, withView) })
	}
}

func testCollector(t *testing.T, withView bool) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.7.0.0/24", 28)
	a, other := NewAllocator(st, "nodeA"), NewAllocator(st, "nodeB")
	if withView {
		a.UseView(etcdtest.NewView(t, st)) // as the daemon's collector reads
	}
	assign := func(al *Allocator, handle string) netip.Addr {
		t.Helper()
		ip, err := al.AutoAssign(ctx, netip.Prefix{}, handle)
		if err != nil {
			t.Fatal(err)
		}
		return ip
	}
	used := assign(a, "docker-used")
	leak := assign(a, "docker-leak")
	aux := assign(a, "docker-aux")
	tunnel := assign(a, "vxlan-tunnel-addr-nodeA")
	theirs := assign(other, "docker-theirs")
	// nodeB's address inside nodeA's block: nodeB's to judge, not nodeA's.
	borrowed := used.Next().Next().Next().Next().Next()
	if err := other.Assign(ctx, borrowed, "docker-borrowed"); err != nil {
		t.Fatal(err)
	}
	ep := datastore.WorkloadEndpoint{Node: "nodeA", EndpointID: "e1", IPv4: used.String()}
	if err := st.Put(ctx, datastore.EndpointKey("nodeA", "e1"), &ep); err != nil {
		t.Fatal(err)
	}
	n := datastore.Network{ID: "n1", AuxAddresses: []string{aux.String()}}
	if err := st.Put(ctx, datastore.NetworkKey("n1"), &n); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, datastore.NodeKey("nodeA"), &datastore.Node{Name: "nodeA"}); err != nil {
		t.Fatal(err)
	}

	c := NewCollector(a, time.Minute)
	clock := time.Unix(1000, 0)
	c.now = func() time.Time { return clock }
	sweep := func() []Finding {
		t.Helper()
		got, err := c.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := sweep(); len(got) != 0 {
		t.Fatalf("first sweep released %v; a leak must last the grace period first", got)
	}
	clock = clock.Add(59 * time.Second)
	if got := sweep(); len(got) != 0 {
		t.Fatalf("sweep within the grace period released %v", got)
	}
	late := assign(a, "docker-late") // leaked from now on
	clock = clock.Add(time.Second)
	got := sweep()
	if len(got) != 1 || got[0].IP != leak.String() {
		t.Fatalf("after the grace period the sweep released %v, want only %s", got, leak)
	}
	now := assigned(t, st)
	for _, ip := range []netip.Addr{used, aux, tunnel, theirs, borrowed, late} {
		if now[ip] == "" {
			t.Errorf("%s was released; it is in use, reserved, a tunnel's, another node's (in its own block or in this node's), or not leaked long enough", ip)
		}
	}
	if now[leak] != "" {
		t.Errorf("%s is still assigned to %s", leak, now[leak])
	}

	// A leak that gets used before the grace period ends is forgotten.
	ep2 := datastore.WorkloadEndpoint{Node: "nodeA", EndpointID: "e2", IPv4: late.String()}
	if err := st.Put(ctx, datastore.EndpointKey("nodeA", "e2"), &ep2); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Hour)
	if got := sweep(); len(got) != 0 {
		t.Fatalf("sweep released %v, which an endpoint now uses", got)
	}
	if len(c.suspects.first) != 0 {
		t.Fatalf("the collector still tracks %v", c.suspects.first)
	}
}
