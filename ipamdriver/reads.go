package ipamdriver

import (
	"context"
	"errors"

	"github.com/tabbynet/tabby/datastore"
)

// The allocator reads pools, affinities, blocks and handles from the
// daemon's cluster view when it has one (etcd itself for the CLI), so a
// request reads nothing from etcd. The view may lag, which is harmless:
// every block and handle read is written back with a CAS on the revision
// read, the allocator waits for the view to hold its own last write before
// reading, and after a lost CAS it waits for everything etcd had, so the
// retry sees what beat it.

// UseView makes the allocator read from v (the daemon's).
func (a *Allocator) UseView(v *datastore.View) { a.view = v }

// fresh waits until the view holds this allocator's own writes.
func (a *Allocator) fresh(ctx context.Context) error {
	if a.view == nil {
		return nil
	}
	return a.view.Wait(ctx, a.lastRev.Load())
}

// records lists prefix with revisions, from the view or etcd.
func (a *Allocator) records(ctx context.Context, prefix string) ([]datastore.KV, error) {
	if a.view == nil {
		return a.store.List(ctx, prefix)
	}
	if err := a.fresh(ctx); err != nil {
		return nil, err
	}
	return a.view.List(prefix), nil
}

// keys lists the keys under prefix, from the view or etcd.
func (a *Allocator) keys(ctx context.Context, prefix string) ([]string, error) {
	if a.view == nil {
		return a.store.ListKeys(ctx, prefix)
	}
	if err := a.fresh(ctx); err != nil {
		return nil, err
	}
	return a.view.Keys(prefix), nil
}

// poolList lists the valid pools, from the view or etcd.
func (a *Allocator) poolList(ctx context.Context) ([]datastore.IPPool, error) {
	if a.view == nil {
		return datastore.ListAs[datastore.IPPool](ctx, a.store, datastore.PoolsDir)
	}
	if err := a.fresh(ctx); err != nil {
		return nil, err
	}
	return datastore.ViewList[datastore.IPPool](a.view, datastore.PoolsDir), nil
}

// get reads one record and its mod revision, from the view (decoded
// afresh: the caller may change it) or etcd. Every record read so is then
// written with a CAS on that revision, so a view that lags costs one lost
// CAS, after which the view has caught up.
func get[T any](ctx context.Context, a *Allocator, key string) (T, int64, error) {
	var t T
	if a.view == nil {
		rev, err := a.store.Get(ctx, key, &t)
		return t, rev, err
	}
	if err := a.fresh(ctx); err != nil {
		return t, 0, err
	}
	kv, err := a.view.Fetch(ctx, key) // another host's block: from etcd
	if err != nil {
		return t, 0, err
	}
	t, err = datastore.Decode[T](key, kv.Value)
	return t, kv.Rev, err
}

// catchUp makes the next read wait for everything etcd holds now; it
// reports false when there is no view (etcd is read directly: nothing to
// catch up with) or etcd does not answer.
func (a *Allocator) catchUp(ctx context.Context) bool {
	if a.view == nil {
		return false
	}
	r, err := a.store.Revision(ctx)
	if err != nil {
		return false
	}
	a.seen(r)
	return true
}

// commit writes ops atomically and remembers the revision, so the next
// read waits for the view to hold it; a lost CAS makes the next read wait
// for all of etcd.
func (a *Allocator) commit(ctx context.Context, ops ...datastore.Op) (int64, error) {
	rev, err := a.txn(ctx, ops...)
	if err == nil {
		a.seen(rev)
	} else if errors.Is(err, datastore.ErrConflict) {
		a.catchUp(ctx)
	}
	return rev, err
}

func (a *Allocator) seen(rev int64) {
	for {
		old := a.lastRev.Load()
		if rev <= old || a.lastRev.CompareAndSwap(old, rev) {
			return
		}
	}
}
