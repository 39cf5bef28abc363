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
	runCache(t, c, 10*time.Second)
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

// A listing larger than a page is read in pages at the revision of the
// first: what is written or deleted while it goes on comes once, from the
// watch after it, never as part of the listing.
func TestCacheListsInPagesAtOneRevision(t *testing.T) {
	st := etcdtest.NewStore(t)
	reader := etcdtest.NewStore(t) // the cache's own, whose Range calls are the listing's
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := datastore.Prefix + "pagetest/"
	const n = 1203 // two whole pages and part of a third
	key := func(i int) string { return fmt.Sprintf("%sk%04d", dir, i) }
	for i := 0; i < n; i += 100 {
		var ops []datastore.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, datastore.Op{Key: key(j), Value: &rec{Step: 1}, Rev: datastore.Any})
		}
		if err := st.Commit(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string][]string{}
	var c *datastore.Cache
	c = reader.NewCache(dir, func(ch datastore.Change) {
		if ch.Key == key(0) && ch.Value != nil && string(ch.Value) == `{"step":1}` {
			// Called from the listing: change keys of its later pages now.
			if err := st.Put(ctx, key(1100), &rec{Step: 2}); err != nil {
				t.Error(err)
			}
			if err := st.Delete(ctx, key(1200)); err != nil {
				t.Error(err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		v := "-"
		if !ch.Deleted {
			v = string(ch.Value)
		}
		seen[ch.Key] = append(seen[ch.Key], v)
	})
	ranges := reader.Requests()["Range"]
	runCache(t, c, 20*time.Second)
	mu.Lock()
	listed := len(seen)
	first1100 := slices.Clone(seen[key(1100)])
	mu.Unlock()
	if listed != n {
		t.Fatalf("the listing handed over %d keys, want all %d", listed, n)
	}
	if r := reader.Requests()["Range"] - ranges; r != 3 {
		t.Fatalf("the listing of %d keys took %d Range calls, want 3: it is read in pages of 500", n, r)
	}
	if !slices.Equal(first1100, []string{`{"step":1}`}) {
		t.Fatalf("the listing gave %s %q: a later page was read at a newer revision", key(1100), first1100)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got1100, got1200 := slices.Clone(seen[key(1100)]), slices.Clone(seen[key(1200)])
		mu.Unlock()
		if slices.Equal(got1100, []string{`{"step":1}`, `{"step":2}`}) && slices.Equal(got1200, []string{`{"step":1}`, "-"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the listing the handler saw %s %q and %s %q, want each change once after the listed value",
				key(1100), got1100, key(1200), got1200)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.Lists() != 1 {
		t.Fatalf("listed %d times, want 1", c.Lists())
	}
}

// runCache runs c until the test ends and waits, at most within, for its
// first listing to reach the handler.
func runCache(t *testing.T, c *datastore.Cache, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.Synced():
	case <-time.After(within):
		t.Fatal("never synced")
	}
}
