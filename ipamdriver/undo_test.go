package ipamdriver

import (
	"context"
	"errors"
	"fmt"
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

// lossyLink passes transactions to etcd, except the next one once armed:
// that one it keeps (late) or applies (landed), and answers "unreachable"
// either way, as etcd does when it is stopped with the request in its
// socket, or when its reply is lost.
type lossyLink struct {
	st     *datastore.Store
	armed  bool
	landed bool
	kept   []datastore.Op
}

func (l *lossyLink) txn(ctx context.Context, ops ...datastore.Op) (int64, error) {
	if !l.armed {
		return l.st.CommitRev(ctx, ops...)
	}
	l.armed = false
	if l.landed {
		if _, err := l.st.CommitRev(ctx, ops...); err != nil {
			return 0, err
		}
	} else {
		l.kept = ops
	}
	return 0, fmt.Errorf("txn: %w (test)", datastore.ErrUnavailable)
}

// An assignment etcd did not answer in time is undone whenever it lands:
// before the undo (the reply was lost) or after it (etcd was stopped with
// the request unread, and applies it when it runs again, as CI once saw in
// the etcd outage test). Claims, assignments into a known block and fixed
// addresses (--ip) alike.
func TestAssignmentThatLandsLateIsUndone(t *testing.T) {
	for _, tc := range []struct {
		name         string
		warm, landed bool
		fixed        string
	}{
		{name: "claim, lands after the undo"},
		{name: "claim, lands before the undo", landed: true},
		{name: "known block, lands after the undo", warm: true},
		{name: "known block, lands before the undo", warm: true, landed: true},
		{name: "fixed address, lands after the undo", warm: true, fixed: "10.9.0.9"},
		{name: "fixed address in a new block, lands after the undo", fixed: "10.9.0.40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			addPool(t, st, "p", "10.9.0.0/24", 28)
			d := New(st, "nodeA", false)
			link := &lossyLink{st: st}
			d.alloc.txn = link.txn
			want := map[netip.Addr]string{}
			if tc.warm {
				kept, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: PoolAnyV4})
				if err != nil {
					t.Fatal(err)
				}
				want[netip.MustParsePrefix(kept.Address).Addr()] = "kept"
			}
			link.armed, link.landed = true, tc.landed
			_, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: PoolAnyV4, Address: tc.fixed})
			if !errors.Is(err, datastore.ErrUnavailable) {
				t.Fatalf("request over a lossy link: err = %v, want datastore unreachable", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for st.Pending() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the undo is still queued 10 s after etcd answers")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !tc.landed {
				if len(link.kept) == 0 {
					t.Fatal("the link kept no transaction: the test means nothing")
				}
				if _, err := st.CommitRev(context.Background(), link.kept...); !errors.Is(err, datastore.ErrConflict) {
					t.Fatalf("the failed request's transaction, landing after the undo: err = %v, want a conflict", err)
				}
			}
			now := assigned(t, st)
			if len(now) != len(want) {
				t.Fatalf("assigned addresses %v, want only the earlier request's %v", now, want)
			}
			for a := range want {
				if now[a] == "" {
					t.Fatalf("assigned addresses %v, want %s still assigned", now, a)
				}
			}
			s, err := ReadState(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range Check(s) {
				// No endpoints here: the earlier request's address counts as leaked.
				if a, _ := netip.ParseAddr(f.IP); f.Kind != "leaked" || want[a] == "" {
					t.Errorf("ipam check after the undo: %v", f)
				}
			}
			// The fixed address, or one from the fenced block, is free again.
			if _, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: PoolAnyV4, Address: tc.fixed}); err != nil {
				t.Fatalf("request after the undo: %v", err)
			}
		})
	}
}

// The undo takes back only the address the failed transaction assigned: a
// handle used again (a node's tunnel handle, asked again after a failure)
// keeps the address it holds rightly.
func TestUndoKeepsTheHandlesOtherAddress(t *testing.T) {
	st := newStore(t)
	addPool(t, st, "p", "10.9.0.0/24", 28)
	a := NewAllocator(st, "nodeA")
	link := &lossyLink{st: st}
	a.txn = link.txn
	ctx := context.Background()
	const handle = "tunnel-vxlan-nodeA"
	first, err := a.AutoAssign(ctx, netip.Prefix{}, handle)
	if err != nil {
		t.Fatal(err)
	}
	link.armed = true
	if _, err := a.AutoAssign(ctx, netip.Prefix{}, handle); !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("assignment over a lossy link: err = %v, want datastore unreachable", err)
	}
	for deadline := time.Now().Add(10 * time.Second); st.Pending() > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the undo is still queued 10 s after etcd answers")
		}
	}
	if _, err := st.CommitRev(ctx, link.kept...); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("the failed transaction, landing after the undo: err = %v, want a conflict", err)
	}
	if now := assigned(t, st); len(now) != 1 || now[first] != handle {
		t.Fatalf("assigned addresses %v, want only %s for %s", now, first, handle)
	}
	var h datastore.Handle
	n := 0
	if _, err := st.Get(ctx, datastore.HandleKey(handle), &h); err == nil {
		for _, c := range h.Blocks {
			n += c
		}
	}
	if n != 1 {
		t.Fatalf("handle record after the undo: %+v; want its one address counted", h)
	}
}
