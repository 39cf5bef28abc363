package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tabbynet/tabby/datastore"
)

// unsure is an assignment etcd did not answer in time: it may never have
// arrived, may have been applied with the reply lost, or may still be on
// its way (etcd stopped with the request in its socket applies it when it
// runs again, after the client gave up).
type unsure struct {
	blocks map[netip.Prefix]string // each block it wrote, with its pool
	addrs  map[netip.Addr]string   // each address it assigned, with its handle
}

// unsure describes the batch's transaction, which assigned reqs.
func (bt *batch) unsure(reqs []*autoReq) unsure {
	u := unsure{blocks: map[netip.Prefix]string{}, addrs: map[netip.Addr]string{}}
	for bp := range bt.dirty {
		u.blocks[bp] = bt.a.blocks[bp].b.Pool
	}
	for _, r := range reqs {
		if r.err == nil && r.addr.IsValid() {
			u.addrs[r.addr] = r.handle
		}
	}
	return u
}

// fenceLater undoes u once etcd answers again. The caller was told the
// assignment failed and will never use or release its addresses, so they
// must not stay assigned, whether the transaction landed before the undo
// or lands after it.
func (a *Allocator) fenceLater(u unsure) {
	a.store.Later(func(ctx context.Context) error { return a.fence(ctx, u) })
}

// fence writes every block u wrote, without the addresses u assigned (only
// those: a handle used again, as a node's tunnel handle is, may hold
// another address rightly). Releasing what
// landed is not enough: a transaction still on its way would land after
// the release. Every assignment compares its blocks' revisions (a claim,
// that the block does not exist), and this write moves them, so whatever
// of u is still on its way fails.
func (a *Allocator) fence(ctx context.Context, u unsure) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invalidate() // this write moves revisions the batch cache holds
	for bp, pool := range u.blocks {
		if err := a.fenceBlock(ctx, bp, pool, u.addrs); err != nil {
			return err
		}
	}
	return nil
}

func (a *Allocator) fenceBlock(ctx context.Context, bp netip.Prefix, pool string, addrs map[netip.Addr]string) error {
	for i := 0; i < datastore.MaxRetries; i++ {
		b, rev, err := a.readBlock(ctx, bp)
		var ops []datastore.Op
		switch {
		case err == nil:
			// Written even when unchanged: the write is the fence.
			ops = append(ops, datastore.Op{Key: datastore.BlockKey(b.CIDR), Value: b.Block, Rev: rev})
		case errors.Is(err, datastore.ErrNotFound):
			// The claim did not land: claim the block, empty, as it would
			// have, so that its "does not exist yet" check fails.
			b, rev = newBlock(bp, pool, a.node), 0
			ops = append(ops, datastore.Op{Key: datastore.BlockKey(b.CIDR), Value: b.Block, Rev: 0},
				datastore.Op{Key: datastore.AffinityKey(a.node, b.CIDR),
					Value: &datastore.Affinity{Node: a.node, Block: b.CIDR}, Rev: datastore.Any})
		default:
			return err
		}
		for addr, h := range addrs {
			if !bp.Contains(addr) || b.releaseIf(addr, func(held string) bool { return held == h }) == "" {
				continue
			}
			op, err := a.handleRelease(ctx, h, b.CIDR, 1)
			if err != nil {
				return err
			}
			ops = append(ops, op...)
		}
		if _, err = a.commit(ctx, ops...); !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("undo an assignment in block %s: %w", bp, datastore.ErrConflict)
}
