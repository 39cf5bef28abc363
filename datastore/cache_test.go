package datastore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// The cache hands its handler the listing, then each change once; after a
// cut with the history compacted meanwhile it lists again and hands over
// only what differs.
func TestCacheListsWatchesAndRelists(t *testing.T) {
	direct := etcdtest.NewStore(t)
	px := etcdtest.NewProxy(t)
	st := px.Store(t, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := datastore.Prefix + "cachetest/"
	put := func(k string, v int) {
		t.Helper()
		if err := direct.Put(ctx, dir+k, &rec{Step: v}); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		t.Helper()
		if err := direct.Delete(ctx, dir+k); err != nil {
			t.Fatal(err)
		}
	}
	put("a", 1)
	put("b", 1)
	var mu sync.Mutex
	var seen []string
	c := st.NewCache(dir, func(ch datastore.Change) {
		mu.Lock()
		defer mu.Unlock()
		if ch.Deleted {
			seen = append(seen, "-"+ch.Key[len(dir):])
		} else {
			seen = append(seen, fmt.Sprintf("%s=%s", ch.Key[len(dir):], ch.Value))
		}
	})
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	expect := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			mu.Lock()
			got := slices.Clone(seen)
			mu.Unlock()
			slices.Sort(got)
			slices.Sort(want)
			if slices.Equal(got, want) {
				mu.Lock()
				seen = nil
				mu.Unlock()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: handler saw %q, want %q", what, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	select {
	case <-c.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("never synced")
	}
	expect("first listing", `a={"step":1}`, `b={"step":1}`)
	put("c", 1)
	del("a")
	expect("watch", `c={"step":1}`, "-a")

	// A cut with the history intact: the watch resumes where it stopped,
	// so what was written meanwhile comes without listing again.
	px.Partition()
	put("f", 1)
	del("f")
	put("g", 1)
	px.Cut()
	expect("after a cut", `f={"step":1}`, "-f", `g={"step":1}`)
	if n := c.Lists(); n != 1 {
		t.Fatalf("the cache listed %d times; a cut without compaction must resume the watch", n)
	}
	del("g")
	expect("delete", "-g")

	px.Partition()
	put("b", 2)
	del("c")
	put("d", 1)
	put("d", 2)
	if err := direct.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	px.Cut() // the watch resumes from a compacted revision
	// b, c and d changed; a stays deleted and nothing else comes again.
	expect("after a cut and a compaction", `b={"step":2}`, "-c", `d={"step":2}`)
	if n := c.Lists(); n != 2 {
		t.Fatalf("the cache listed %d times, want 2: once at start, once after the compaction", n)
	}
	put("e", 1)
	expect("the watch goes on", `e={"step":1}`)
}
