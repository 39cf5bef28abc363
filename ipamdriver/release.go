package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// ReleaseNode releases what a gone node held in IPAM: the addresses its
// endpoints had (addrs), its tunnel addresses, and its blocks. A block left
// empty is deleted with the node's affinity; one still holding addresses
// that other hosts borrowed stays, without an owner, until they go.
func (a *Allocator) ReleaseNode(ctx context.Context, node string, addrs []netip.Addr) (blocks int, err error) {
	for _, ip := range addrs {
		if err := a.ReleaseIP(ctx, ip); err != nil {
			return 0, fmt.Errorf("release %s: %w", ip, err)
		}
	}
	for _, p := range tunnelHandlePrefixes {
		if err := a.ReleaseHandle(ctx, p+node); err != nil {
			return 0, err
		}
	}
	keys, err := a.keys(ctx, datastore.AffinitiesOf(node))
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invalidate()
	for _, k := range keys {
		bp, err := netip.ParsePrefix(datastore.KeyToCIDR(k[strings.LastIndex(k, "/")+1:]))
		if err != nil {
			continue
		}
		if err := a.releaseBlock(ctx, node, bp); err != nil {
			return blocks, err
		}
		blocks++
	}
	return blocks, nil
}

// releaseBlock drops node's claim on one block, in one transaction with the
// block itself (deleted when empty), retrying only on conflict.
func (a *Allocator) releaseBlock(ctx context.Context, node string, bp netip.Prefix) error {
	aff := datastore.Op{Key: datastore.AffinityKey(node, bp.String()), Rev: datastore.Any}
	for i := 0; i < datastore.MaxRetries; i++ {
		b, rev, err := a.readBlock(ctx, bp)
		if errors.Is(err, datastore.ErrNotFound) {
			_, err := a.commit(ctx, aff)
			return err
		} else if err != nil {
			return err
		}
		op := datastore.Op{Key: datastore.BlockKey(b.CIDR), Rev: rev} // delete
		if len(b.inUse()) > 0 {
			b.Affinity = ""
			op.Value = b.Block
		}
		_, err = a.commit(ctx, op, aff)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("release block %s: %w", bp, datastore.ErrConflict)
}
