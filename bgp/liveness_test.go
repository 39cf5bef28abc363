package bgp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// A node whose liveness key vanishes stays a peer for the grace (its
// daemon may be taking a new lease after an etcd outage); when the grace
// ends, Run is woken to drop it. A node never seen alive is no peer.
func TestLivenessGraceKeepsPeersThroughAGap(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		if err := st.Put(ctx, datastore.NodeKey(n), &datastore.Node{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put(ctx, datastore.LivenessKey("b"), "b"); err != nil {
		t.Fatal(err)
	}
	view := etcdtest.NewView(t, st)
	s := New(view, Config{Node: "a"}, nil, nil)
	const grace = 500 * time.Millisecond
	live := func() string {
		t.Helper()
		etcdtest.CaughtUp(t, st, view)
		var out []string
		for _, n := range s.liveNodes(grace) {
			out = append(out, n.Name)
		}
		return strings.Join(out, ",")
	}
	if got := live(); got != "a,b" {
		t.Fatalf("live nodes %q, want a,b (c never held a lease)", got)
	}
	// No read for longer than the grace (as during an etcd outage), then
	// the first read finds b's lease gone: the grace starts now.
	time.Sleep(2 * grace)
	if err := st.Delete(ctx, datastore.LivenessKey("b")); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	if got := live(); got != "a,b" {
		t.Fatalf("first read without b's key: live nodes %q, want a,b (within the grace)", got)
	}
	select {
	case <-s.recheck:
	case <-time.After(5 * time.Second):
		t.Fatal("no recheck when b's grace ended")
	}
	if waited := time.Since(gone); waited < grace-50*time.Millisecond {
		t.Fatalf("recheck after %s, before the %s grace ended", waited, grace)
	}
	if got := live(); got != "a" {
		t.Fatalf("after the grace: live nodes %q, want a", got)
	}
	// b's daemon takes a new lease: b is a peer again at once.
	if err := st.Put(ctx, datastore.LivenessKey("b"), "b"); err != nil {
		t.Fatal(err)
	}
	if got := live(); got != "a,b" {
		t.Fatalf("after b's new lease: live nodes %q, want a,b", got)
	}
}

// Lease TTL plus grace is the hold time, so a lost host's routes go within
// it (issue 7: host loss).
func TestLivenessTTLAndGraceAddUpToHoldTime(t *testing.T) {
	for hold, want := range map[uint32][2]int64{3: {2, 1}, 4: {3, 1}, 6: {4, 2}, 30: {20, 10}, 0: {80, 10}} {
		bc := datastore.BGPConfiguration{HoldTime: hold}
		ttl, grace := bc.LivenessTTL(), int64(bc.LivenessGrace()/time.Second)
		if ttl != want[0] || grace != want[1] || ttl+grace != int64(bc.Hold()) {
			t.Errorf("hold %d: ttl %d grace %d, want %v adding up to %d", hold, ttl, grace, want, bc.Hold())
		}
	}
}
