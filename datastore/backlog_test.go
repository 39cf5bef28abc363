package datastore_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

type padded struct {
	N   int    `json:"n"`
	Pad string `json:"pad"`
}

// A cache whose handler falls behind a burst does not take the backlog
// into its own memory: etcd keeps it and sends it, in fragments no larger
// than its request limit, as fast as the handler takes it. Every change
// then comes once and in order, even when the connection is cut while the
// backlog is being sent (the watch resumes inside a fragment).
func TestCacheLeavesTheBacklogInEtcd(t *testing.T) {
	direct := etcdtest.NewStore(t)
	px := etcdtest.NewProxy(t)
	st := px.Store(t, 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := datastore.Prefix + "backlog/"

	gate := make(chan struct{})
	var mu sync.Mutex
	var order []int64
	events := map[string][]string{}
	c := st.NewCache(dir, func(ch datastore.Change) {
		if ch.Key == dir+"first" {
			<-gate // the handler is stuck while the burst is written
		}
		mu.Lock()
		defer mu.Unlock()
		order = append(order, ch.Rev)
		if ch.Deleted {
			events[ch.Key] = append(events[ch.Key], "-")
		} else {
			events[ch.Key] = append(events[ch.Key], "+")
		}
	})
	runCache(t, c, 10*time.Second)
	if err := direct.Put(ctx, dir+"first", &padded{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the handler has it and waits

	before := heapMB()
	// 40 MB: 400 transactions of 100 keys of 1 KB, then every tenth key
	// deleted again.
	pad := strings.Repeat("x", 1000)
	const txns, per = 400, 100
	for g := 0; g < txns; g++ {
		ops := make([]datastore.Op, 0, per)
		for i := 0; i < per; i++ {
			ops = append(ops, datastore.Op{Key: fmt.Sprintf("%sk%03d-%03d", dir, g, i), Value: &padded{N: g, Pad: pad}, Rev: datastore.Any})
		}
		if err := direct.Commit(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	for g := 0; g < txns; g += 10 {
		for i := 0; i < per; i += 10 {
			if err := direct.Delete(ctx, fmt.Sprintf("%sk%03d-%03d", dir, g, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(time.Second) // time for a client that reads ahead to do so
	held := heapMB() - before
	t.Logf("heap grew %.1f MB while 40 MB waited for the handler", held)
	if held > 12 {
		t.Errorf("the cache took %.1f MB of the 40 MB backlog into memory; it should stay in etcd", held)
	}

	close(gate)
	want := 1 + txns*per + (txns/10)*(per/10)
	cut := false
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if !cut && n > want/3 {
			px.Cut() // in the middle of the backlog
			cut = true
		}
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything sent twice would come now
	mu.Lock()
	defer mu.Unlock()
	if len(order) != want {
		t.Fatalf("handler saw %d changes, want %d, each once", len(order), want)
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("change %d has revision %d after %d", i, order[i], order[i-1])
		}
	}
	for g := 0; g < txns; g++ {
		for i := 0; i < per; i++ {
			k, w := fmt.Sprintf("%sk%03d-%03d", dir, g, i), "+"
			if g%10 == 0 && i%10 == 0 {
				w = "+-"
			}
			if got := strings.Join(events[k], ""); got != w {
				t.Fatalf("%s: handler saw %q, want %q", k, got, w)
			}
		}
	}
}

func heapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}
