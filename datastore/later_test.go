package datastore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

type rec struct {
	Step int `json:"step"`
}

// Writes queued while etcd is cut off wait, in order, and land once it
// answers; a write failing for another reason is dropped, not retried.
func TestLaterWaitsForEtcdInOrder(t *testing.T) {
	direct := etcdtest.NewStore(t)
	px := etcdtest.NewProxy(t)
	st := px.Store(t, 300*time.Millisecond)
	ctx := context.Background()
	if err := direct.Put(ctx, datastore.Prefix+"later/a", &rec{Step: 0}); err != nil {
		t.Fatal(err)
	}

	px.Partition()
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	st.Later(func(ctx context.Context) error {
		err := st.Delete(ctx, datastore.Prefix+"later/a")
		if err == nil {
			note("delete a")
		}
		return err
	})
	st.Later(func(ctx context.Context) error { note("refused"); return errors.New("not retried") })
	st.Later(func(ctx context.Context) error {
		err := st.Put(ctx, datastore.Prefix+"later/b", &rec{Step: 2})
		if err == nil {
			note("put b")
		}
		return err
	})
	time.Sleep(1500 * time.Millisecond) // several retries while cut off
	if n := st.Pending(); n != 3 {
		t.Fatalf("while etcd is cut off %d writes are pending, want 3", n)
	}
	var r rec
	if _, err := direct.Get(ctx, datastore.Prefix+"later/a", &r); err != nil {
		t.Fatalf("key a is gone while etcd was cut off: %v", err)
	}

	px.Release()
	deadline := time.Now().Add(10 * time.Second)
	for st.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes still pending 10 s after etcd is back", st.Pending())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := direct.Get(ctx, datastore.Prefix+"later/a", &r); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("key a after the queue drained: err = %v, want not found", err)
	}
	if _, err := direct.Get(ctx, datastore.Prefix+"later/b", &r); err != nil || r.Step != 2 {
		t.Fatalf("key b after the queue drained: %+v, %v", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 3 || order[0] != "delete a" || order[1] != "refused" || order[2] != "put b" {
		t.Fatalf("writes ran as %v, want [delete a refused put b]", order)
	}
}

// NowOrLater writes at once while etcd answers; while it does not, and
// while anything waits in the queue, writes are queued behind it.
func TestNowOrLater(t *testing.T) {
	direct := etcdtest.NewStore(t)
	px := etcdtest.NewProxy(t)
	st := px.Store(t, 300*time.Millisecond)
	ctx := context.Background()
	put := func(step int) func(context.Context) error {
		return func(ctx context.Context) error { return st.Put(ctx, datastore.Prefix+"later/k", &rec{Step: step}) }
	}
	if queued, err := st.NowOrLater(ctx, put(1)); queued || err != nil {
		t.Fatalf("with etcd up: queued=%v err=%v, want written now", queued, err)
	}
	if queued, err := st.NowOrLater(ctx, func(context.Context) error { return errors.New("bad") }); queued || err == nil {
		t.Fatalf("a write failing for its own reason: queued=%v err=%v, want that error", queued, err)
	}
	px.Partition()
	if queued, err := st.NowOrLater(ctx, put(2)); !queued || err != nil {
		t.Fatalf("with etcd cut off: queued=%v err=%v, want queued", queued, err)
	}
	px.Release()
	// The queue may not have drained yet: a new write must go behind it.
	if queued, err := st.NowOrLater(ctx, put(3)); err != nil {
		t.Fatalf("after etcd is back: queued=%v err=%v", queued, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var r rec
	if _, err := direct.Get(ctx, datastore.Prefix+"later/k", &r); err != nil || r.Step != 3 {
		t.Fatalf("after the queue drained the key holds step %d (%v), want the last write, 3", r.Step, err)
	}
}
