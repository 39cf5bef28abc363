package datastore_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// The view holds every record after one listing, hands out only valid
// ones, tells subscribers of each change under their prefix only, and lets
// a writer wait until its own write is visible.
func TestViewServesTheClusterFromOneWatch(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ep := func(node, id, ip string) datastore.WorkloadEndpoint {
		return datastore.WorkloadEndpoint{Node: node, EndpointID: id, NetworkID: "n1", IPv4: ip, Interface: "cali" + id[:11]}
	}
	a := ep("node1", "a1111111111111111111111111111111", "10.0.0.1")
	if err := st.Put(ctx, datastore.EndpointKey("node1", a.EndpointID), &a); err != nil {
		t.Fatal(err)
	}
	bad := ep("node2", "b2222222222222222222222222222222", "not-an-address")
	if err := st.Put(ctx, datastore.EndpointKey("node2", bad.EndpointID), &bad); err != nil {
		t.Fatal(err)
	}
	v := st.NewView()
	var mu sync.Mutex
	var heard []string
	v.Subscribe(datastore.EndpointsOf("node1"), func(ch datastore.Change) {
		mu.Lock()
		heard = append(heard, ch.Key)
		mu.Unlock()
	})
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := v.Wait(wctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := datastore.ViewList[datastore.WorkloadEndpoint](v, datastore.EndpointsDir); len(got) != 1 || got[0].IPv4 != "10.0.0.1" {
		t.Fatalf("view lists %+v; want the one valid endpoint", got)
	}
	if keys := v.Keys(datastore.EndpointsDir); len(keys) != 2 {
		t.Fatalf("keys %q; want both records, the bad one too", keys)
	}
	if _, _, ok := datastore.ViewGet[datastore.WorkloadEndpoint](v, datastore.EndpointKey("node2", bad.EndpointID)); ok {
		t.Fatal("a record that fails its check is handed out")
	}

	c := ep("node1", "c3333333333333333333333333333333", "10.0.0.3")
	rev, err := st.CommitRev(ctx, datastore.Op{Key: datastore.EndpointKey("node1", c.EndpointID), Value: &c, Rev: datastore.Any})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Wait(wctx, rev); err != nil {
		t.Fatal(err)
	}
	got, at, ok := datastore.ViewGet[datastore.WorkloadEndpoint](v, datastore.EndpointKey("node1", c.EndpointID))
	if !ok || got.IPv4 != "10.0.0.3" || at != rev {
		t.Fatalf("after waiting for revision %d the view has %+v at %d (%v)", rev, got, at, ok)
	}
	d := ep("node2", "d4444444444444444444444444444444", "10.0.0.4")
	if err := st.Put(ctx, datastore.EndpointKey("node2", d.EndpointID), &d); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, datastore.EndpointKey("node1", a.EndpointID)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(datastore.ViewList[datastore.WorkloadEndpoint](v, datastore.EndpointsOf("node1"))) != 1 || len(v.Keys(datastore.EndpointsOf("node2"))) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("view never saw the delete and the put: %q", v.Keys(datastore.EndpointsDir))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{datastore.EndpointKey("node1", a.EndpointID), datastore.EndpointKey("node1", c.EndpointID), datastore.EndpointKey("node1", a.EndpointID)}
	if len(heard) != len(want) || heard[0] != want[0] || heard[1] != want[1] || heard[2] != want[2] {
		t.Fatalf("node1's subscriber heard %q, want %q (its listing, the put, the delete; nothing of node2)", heard, want)
	}
	if v.Lists() != 1 {
		t.Fatalf("the view listed etcd %d times for a few changes", v.Lists())
	}
}

// The store counts its etcd calls by method, as the daemon's metrics show.
func TestStoreCountsItsRequests(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	before := st.Requests()
	if err := st.Put(ctx, datastore.Prefix+"counted", "1"); err != nil {
		t.Fatal(err)
	}
	var v string
	for i := 0; i < 3; i++ {
		if _, err := st.Get(ctx, datastore.Prefix+"counted", &v); err != nil {
			t.Fatal(err)
		}
	}
	after := st.Requests()
	if after["Txn"]-before["Txn"] != 1 || after["Range"]-before["Range"] != 3 {
		t.Fatalf("one write and three reads counted as %v (before %v)", after, before)
	}
}

// Thin: of other hosts' endpoints the view keeps keys and revisions only,
// before and after the call; subscribers still get every value, its own
// host's records stay readable, a listing that would miss values says so,
// and a subscriber that comes too late is refused.
func TestViewThinKeepsOtherHostsKeysOnly(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	put := func(node, id, ip string) {
		t.Helper()
		e := datastore.WorkloadEndpoint{Node: node, EndpointID: id, NetworkID: "n1", IPv4: ip, Interface: "cali" + id[:11]}
		if err := st.Put(ctx, datastore.EndpointKey(node, id), &e); err != nil {
			t.Fatal(err)
		}
	}
	put("node1", "a1111111111111111111111111111111", "10.0.0.1")
	put("node10", "b2222222222222222222222222222222", "10.0.0.2") // "node1" is a prefix of its name
	v := etcdtest.NewView(t, st)
	etcdtest.CaughtUp(t, st, v)
	var mu sync.Mutex
	values := map[string]string{}
	v.Subscribe(datastore.EndpointsDir, func(ch datastore.Change) { // handed what the view holds first
		mu.Lock()
		values[ch.Key] = string(ch.Value)
		mu.Unlock()
	})
	v.Thin(datastore.EndpointsDir, datastore.EndpointsOf("node1"))
	put("node2", "c3333333333333333333333333333333", "10.0.0.3")
	etcdtest.CaughtUp(t, st, v)
	if keys := v.Keys(datastore.EndpointsDir); len(keys) != 3 {
		t.Fatalf("keys %q; want all three endpoints", keys)
	}
	if got := datastore.ViewList[datastore.WorkloadEndpoint](v, datastore.EndpointsDir); len(got) != 1 || got[0].Node != "node1" {
		t.Fatalf("view lists %+v; want only node1's own endpoint", got)
	}
	for _, key := range []string{datastore.EndpointKey("node10", "b2222222222222222222222222222222"), datastore.EndpointKey("node2", "c3333333333333333333333333333333")} {
		if _, err := v.Raw(key); !errors.Is(err, datastore.ErrNotHeld) {
			t.Fatalf("Raw(%s): %v; want ErrNotHeld", key, err)
		}
		if _, _, ok := datastore.ViewGet[datastore.WorkloadEndpoint](v, key); ok {
			t.Fatalf("ViewGet hands out %s", key)
		}
		mu.Lock()
		got := values[key]
		mu.Unlock()
		if got == "" {
			t.Fatalf("the subscriber did not get the value of %s", key)
		}
	}
	if _, err := datastore.ViewListUnchecked[datastore.WorkloadEndpoint](v, datastore.EndpointsOf("node2")); !errors.Is(err, datastore.ErrNotHeld) {
		t.Fatalf("listing another host's endpoints: %v; want ErrNotHeld", err)
	}
	if got, err := datastore.ViewListUnchecked[datastore.WorkloadEndpoint](v, datastore.EndpointsOf("node1")); err != nil || len(got) != 1 {
		t.Fatalf("listing the own host's endpoints: %v, %v", got, err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a subscriber of thinned records after Thin was taken")
		}
	}()
	v.Subscribe(datastore.EndpointsOf("node2"), func(datastore.Change) {})
}

// IPAM blocks name their node inside: the view keeps the values of this
// host's blocks only, judged at each change, and Fetch reads the others'
// from etcd.
func TestViewThinUnlessKeepsOwnBlocks(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	put := func(cidr, node string) {
		t.Helper()
		b := datastore.Block{CIDR: cidr, Pool: "p", Affinity: node, Allocations: make([]string, 64)}
		if err := st.Put(ctx, datastore.BlockKey(cidr), &b); err != nil {
			t.Fatal(err)
		}
	}
	mine, theirs, later := "10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26"
	put(mine, "node1")
	put(theirs, "node2")
	v := etcdtest.NewView(t, st)
	etcdtest.CaughtUp(t, st, v)
	v.ThinUnless(datastore.BlocksDir, datastore.BlockOf("node1"))
	put(later, "node2")
	etcdtest.CaughtUp(t, st, v)
	held := func(cidr string) bool {
		_, err := v.Raw(datastore.BlockKey(cidr))
		if err != nil && !errors.Is(err, datastore.ErrNotHeld) {
			t.Fatalf("Raw(%s): %v", cidr, err)
		}
		return err == nil
	}
	if !held(mine) || held(theirs) || held(later) {
		t.Fatalf("held: mine %v, theirs %v, later %v; want only mine", held(mine), held(theirs), held(later))
	}
	if keys := v.Keys(datastore.BlocksDir); len(keys) != 3 {
		t.Fatalf("keys %q; want all three blocks", keys)
	}
	kv, err := v.Fetch(ctx, datastore.BlockKey(theirs))
	if err != nil || !bytes.Contains(kv.Value, []byte(`"node2"`)) || kv.Rev == 0 {
		t.Fatalf("Fetch of another host's block: %+v, %v", kv, err)
	}
	if _, err := v.Fetch(ctx, datastore.BlockKey("10.0.0.192/26")); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("Fetch of no block: %v; want ErrNotFound", err)
	}
	// The block becomes node1's: its value is held from that change on; and
	// node1's block that goes to node2 is let go.
	put(later, "node1")
	put(mine, "node2")
	etcdtest.CaughtUp(t, st, v)
	if !held(later) || held(mine) {
		t.Fatalf("after the moves held: later %v, mine %v; want later only", held(later), held(mine))
	}
	if b, _, ok := datastore.ViewGet[datastore.Block](v, datastore.BlockKey(later)); !ok || b.Affinity != "node1" {
		t.Fatalf("ViewGet of the block that became node1's: %+v, %v", b, ok)
	}
	if _, err := datastore.ViewListUnchecked[datastore.Block](v, datastore.BlocksDir); !errors.Is(err, datastore.ErrNotHeld) {
		t.Fatalf("listing the blocks: %v; want ErrNotHeld", err)
	}
}
