package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// maxBatch bounds the requests of one transaction (etcd's default limit is
// 128 operations: each request adds a handle, plus blocks, claims, pools).
const maxBatch = 32

// autoReq is one AutoAssign call waiting in the queue.
type autoReq struct {
	within netip.Prefix
	handle string
	addr   netip.Addr
	err    error
	done   chan struct{}
}

// cachedBlock is a block as of a known mod revision (0: not in etcd yet).
type cachedBlock struct {
	b   *block
	rev int64
}

// AutoAssign allocates one address for handle, inside within when it is
// valid (a --subnet), else from any pool of within's family (4 when
// invalid). Concurrent calls are grouped: the first caller commits a batch
// of everyone's allocations in one transaction (group commit), so
// throughput follows etcd's transaction rate instead of its latency.
func (a *Allocator) AutoAssign(ctx context.Context, within netip.Prefix, handle string) (netip.Addr, error) {
	req := &autoReq{within: within, handle: handle, done: make(chan struct{})}
	a.qmu.Lock()
	a.queue = append(a.queue, req)
	if a.leading {
		a.qmu.Unlock()
		<-req.done // never abandoned: a queued request is always answered
		return req.addr, req.err
	}
	a.leading = true
	a.qmu.Unlock()
	for {
		a.qmu.Lock()
		n := min(len(a.queue), maxBatch)
		if n == 0 {
			a.leading = false
			a.qmu.Unlock()
			break
		}
		reqs := append([]*autoReq(nil), a.queue[:n]...)
		a.queue = a.queue[n:]
		a.qmu.Unlock()
		// The batch outlives one caller's cancellation: others wait on it.
		a.runBatch(context.WithoutCancel(ctx), reqs)
	}
	<-req.done
	return req.addr, req.err
}

// runBatch allocates reqs in memory and commits them in one transaction,
// re-reading everything and trying again when any compared revision moved.
func (a *Allocator) runBatch(ctx context.Context, reqs []*autoReq) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	caughtUp := false
	for attempt := 0; attempt < datastore.MaxRetries; attempt++ {
		var bt *batch
		if bt, err = a.newBatch(ctx, attempt > 0); err != nil {
			break
		}
		refused := false
		for _, r := range reqs {
			r.addr, r.err = netip.Addr{}, nil
			if r.addr, r.err, err = bt.allocOne(ctx, r.within, r.handle); err != nil {
				break
			}
			refused = refused || r.err != nil
		}
		if err == nil && refused {
			if bt.cached {
				// Refused on cached pools: a pool may have been added since.
				a.invalidate()
				continue
			}
			if !caughtUp && a.catchUp(ctx) {
				// Refused on a view that may lag: once more, up to date.
				caughtUp = true
				a.invalidate()
				continue
			}
		}
		if err == nil {
			if err = bt.commit(ctx); errors.Is(err, datastore.ErrUnavailable) {
				a.fenceLater(bt.unsure(reqs))
			}
		}
		if err == nil {
			for _, r := range reqs {
				close(r.done)
			}
			return
		}
		a.invalidate() // whatever we cached may be stale
		if !errors.Is(err, datastore.ErrConflict) {
			break
		}
	}
	if errors.Is(err, datastore.ErrConflict) {
		err = fmt.Errorf("allocation: %w after %d attempts", err, datastore.MaxRetries)
	}
	for _, r := range reqs {
		r.addr, r.err = netip.Addr{}, err
		close(r.done)
	}
}

// batch is one transaction in the making.
type batch struct {
	a        *Allocator
	pools    []datastore.KV // every pool, with its revision
	parsed   []datastore.IPPool
	affine   []netip.Prefix
	existing map[netip.Prefix]bool // loaded when a claim is needed
	dirty    map[netip.Prefix]bool
	claims   []netip.Prefix
	handles  map[string]*datastore.Handle
	usedPool map[string]int64
	// readHandles is set on retries: a conflict may come from a handle that
	// exists already (a caller reusing a handle), so read them.
	readHandles bool
	// cached says the pools and affinities came from the cache.
	cached bool
}

func (a *Allocator) newBatch(ctx context.Context, readHandles bool) (*batch, error) {
	bt := &batch{a: a, dirty: map[netip.Prefix]bool{}, handles: map[string]*datastore.Handle{},
		usedPool: map[string]int64{}, readHandles: readHandles, cached: a.pools != nil && a.affine != nil}
	if !bt.cached {
		a.invalidate()
		var err error
		if a.pools, err = a.records(ctx, datastore.PoolsDir); err != nil {
			a.invalidate()
			return nil, err
		}
		if a.affine, err = a.affineBlocks(ctx, a.node); err != nil {
			a.invalidate()
			return nil, err
		}
	}
	bt.pools = a.pools
	bt.affine = append([]netip.Prefix(nil), a.affine...)
	for _, kv := range bt.pools {
		var p datastore.IPPool
		if err := jsonDecode(kv.Value, &p); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		bt.parsed = append(bt.parsed, p)
	}
	if a.blocks == nil {
		a.blocks = map[netip.Prefix]*cachedBlock{}
	}
	return bt, nil
}

// block returns a block from the cache or etcd (nil when it does not exist).
func (bt *batch) block(ctx context.Context, bp netip.Prefix) (*block, error) {
	if c, ok := bt.a.blocks[bp]; ok {
		return c.b, nil
	}
	b, rev, err := bt.a.readBlock(ctx, bp)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	bt.a.blocks[bp] = &cachedBlock{b: b, rev: rev}
	return b, nil
}

// allocOne allocates for one request in memory. reqErr is that request's
// own failure (no pool, exhausted); err fails the whole batch.
func (bt *batch) allocOne(ctx context.Context, within netip.Prefix, handle string) (addr netip.Addr, reqErr, err error) {
	fam := 4
	if within.IsValid() && within.Addr().Is6() {
		fam = 6
	}
	var cands []datastore.IPPool
	for _, p := range bt.parsed {
		pp, perr := netip.ParsePrefix(p.CIDR)
		if perr != nil || p.Disabled || (fam == 4) != pp.Addr().Is4() {
			continue
		}
		if !within.IsValid() || overlaps(pp, within) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return addr, fmt.Errorf("%w: no enabled IPv%d pool%s; create one with 'tabby apply -f'", ErrExhausted, fam, inText(within)), nil
	}
	try := func(bp netip.Prefix) (bool, error) {
		if !inPools(bp, cands) || (within.IsValid() && !overlaps(bp, within)) {
			return false, nil
		}
		b, err := bt.block(ctx, bp)
		if err != nil || b == nil {
			return false, err
		}
		a, ok := b.allocate(handle, within)
		if ok {
			addr = a
			bt.take(b, handle, cands)
		}
		return ok, nil
	}
	// 1. Our own blocks.
	for _, bp := range bt.affine {
		if ok, err := try(bp); err != nil || ok {
			return addr, nil, err
		}
	}
	// 2. A new block claimed for us, searched from a per-node offset.
	if bt.existing == nil {
		if bt.existing, err = bt.a.existingBlocks(ctx); err != nil {
			return addr, nil, err
		}
	}
	for _, p := range cands {
		if bp, ok := bt.a.unclaimedBlock(p, bt.existing, within); ok {
			b := newBlock(bp, p.Name, bt.a.node)
			bt.a.blocks[bp] = &cachedBlock{b: b}
			bt.existing[bp] = true
			bt.affine = append(bt.affine, bp)
			bt.claims = append(bt.claims, bp)
			addr, _ = b.allocate(handle, within)
			bt.take(b, handle, cands)
			return addr, nil, nil
		}
	}
	// 3. Borrow from anyone's block: the pool has no free block left.
	for _, bp := range sortedPrefixes(bt.existing) {
		if ok, err := try(bp); err != nil || ok {
			return addr, nil, err
		}
	}
	names := make([]string, len(cands))
	for i, p := range cands {
		names[i] = p.Name + " (" + p.CIDR + ")"
	}
	return addr, fmt.Errorf("%w in pool %s%s: release addresses or add a pool with 'tabby apply -f'",
		ErrExhausted, strings.Join(names, ", "), inText(within)), nil
}

// take records that handle got an address in b.
func (bt *batch) take(b *block, handle string, pools []datastore.IPPool) {
	bt.dirty[b.prefix] = true
	h := bt.handles[handle]
	if h == nil {
		h = &datastore.Handle{ID: handle, Node: bt.a.node, Blocks: map[string]int{}}
		bt.handles[handle] = h
	}
	h.Blocks[b.CIDR]++
	for _, p := range pools {
		if contains(netip.MustParsePrefix(p.CIDR), b.prefix) {
			bt.usedPool[p.Name] = 0
		}
	}
}

// commit writes every changed block (CAS), new blocks with their affinity,
// and the handles, comparing the pools used so a pool deleted or changed
// meanwhile fails the batch instead of being allocated from.
func (bt *batch) commit(ctx context.Context) error {
	if len(bt.dirty) == 0 {
		return nil
	}
	var ops []datastore.Op
	for _, kv := range bt.pools {
		for name := range bt.usedPool {
			if kv.Key == datastore.PoolKey(name) {
				ops = append(ops, datastore.Op{Key: kv.Key, Rev: kv.Rev, CheckOnly: true})
			}
		}
	}
	for bp := range bt.dirty {
		c := bt.a.blocks[bp]
		ops = append(ops, datastore.Op{Key: datastore.BlockKey(c.b.CIDR), Value: c.b.Block, Rev: c.rev})
	}
	for _, bp := range bt.claims {
		ops = append(ops, datastore.Op{Key: datastore.AffinityKey(bt.a.node, bp.String()),
			Value: &datastore.Affinity{Node: bt.a.node, Block: bp.String()}, Rev: datastore.Any})
	}
	for id, h := range bt.handles {
		var rev int64
		if bt.readHandles {
			var old datastore.Handle
			r, err := bt.a.store.Get(ctx, datastore.HandleKey(id), &old)
			switch {
			case errors.Is(err, datastore.ErrNotFound):
			case err != nil:
				return err
			default:
				for k, n := range old.Blocks {
					h.Blocks[k] += n
				}
				rev = r
			}
		}
		ops = append(ops, datastore.Op{Key: datastore.HandleKey(id), Value: h, Rev: rev})
	}
	rev, err := bt.a.commit(ctx, ops...)
	if err != nil {
		return err
	}
	for bp := range bt.dirty {
		bt.a.blocks[bp].rev = rev
	}
	bt.a.affine = bt.affine // now including this batch's claims
	return nil
}
