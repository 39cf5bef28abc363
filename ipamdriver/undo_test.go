package ipamdriver

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// assigned lists every assigned address with its handle, read directly.
func assigned(t *testing.T, st *datastore.Store) map[netip.Addr]string {
	t.Helper()
	blocks, err := datastore.ListAs[datastore.Block](context.Background(), st, datastore.BlocksDir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Addr]string{}
	for _, sb := range blocks {
		b, err := wrapBlock(&sb)
		if err != nil {
			t.Fatal(err)
		}
		for a, h := range b.inUse() {
			out[a] = h
		}
	}
	return out
}

// A request whose reply etcd never delivers in time fails with "datastore
// unreachable", yet etcd applied it. Docker, told it failed, never uses or
// releases that address, so the driver must release it itself once etcd
// answers again (CI once saw this leak in the etcd outage test).
func TestRequestThatLandsAfterTimeoutIsReleased(t *testing.T) {
	direct := newStore(t)
	addPool(t, direct, "p", "10.9.0.0/24", 28)
	px := etcdtest.NewProxy(t)
	d := New(px.Store(t, 500*time.Millisecond), "nodeA", false)
	req := &ipam.RequestAddressRequest{PoolID: PoolAnyV4}
	kept, err := d.RequestAddress(req) // also warms the allocator's caches
	if err != nil {
		t.Fatal(err)
	}

	px.HoldReplies()
	start := time.Now()
	_, err = d.RequestAddress(req)
	if !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("request with etcd's replies held: err = %v, want datastore unreachable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("request failed only after %s; the store timeout is 500ms", took)
	}
	landed := assigned(t, direct)
	if len(landed) != 2 {
		t.Fatalf("etcd holds %d assigned addresses (%v), want 2: the failed request must have landed for this test to mean anything", len(landed), landed)
	}

	px.Release()
	keptAddr := netip.MustParsePrefix(kept.Address).Addr()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := assigned(t, direct)
		if len(now) == 1 && now[keptAddr] != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after etcd answers again the assigned addresses are %v, want only %s (the failed request's address leaked)", now, keptAddr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
