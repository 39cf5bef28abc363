package ipamdriver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/tabbynet/tabby/datastore"
)

// ErrExhausted means no pool has a free address for the request.
var ErrExhausted = errors.New("no free address")

// maxClaimProbes bounds the search for an unclaimed block in huge pools.
const maxClaimProbes = 1 << 16

// Allocator hands out addresses with Calico's block semantics: a host claims
// blocks by affinity, allocates from its own blocks first, claims a new block
// when they are full, and borrows from another host's block only when the
// pool has no free block left. Every write is a CAS on the block's mod
// revision, so allocators on many hosts never hand out one address twice.
type Allocator struct {
	store *datastore.Store
	node  string
	// mu serialises this host's allocations: they all contend for the same
	// affine block, and a CAS lost to ourselves is wasted work.
	mu sync.Mutex
}

// NewAllocator returns the allocator of one node.
func NewAllocator(store *datastore.Store, node string) *Allocator {
	return &Allocator{store: store, node: node}
}

// NewHandle returns a fresh allocation handle ID.
func NewHandle(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Pools returns the enabled pools of one family (4 or 6), sorted by CIDR.
func (a *Allocator) Pools(ctx context.Context, family int) ([]datastore.IPPool, error) {
	all, err := datastore.ListAs[datastore.IPPool](ctx, a.store, datastore.PoolsDir)
	if err != nil {
		return nil, err
	}
	var out []datastore.IPPool
	for _, p := range all {
		pr, err := netip.ParsePrefix(p.CIDR)
		if err != nil || p.Disabled || (family == 4) != pr.Addr().Is4() {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR < out[j].CIDR })
	return out, nil
}

// PoolFor returns the pool that equals or contains subnet, or an error that
// names the subnet and what to do.
func (a *Allocator) PoolFor(ctx context.Context, subnet netip.Prefix) (datastore.IPPool, error) {
	fam := 4
	if subnet.Addr().Is6() {
		fam = 6
	}
	pools, err := a.Pools(ctx, fam)
	if err != nil {
		return datastore.IPPool{}, err
	}
	for _, p := range pools {
		pp := netip.MustParsePrefix(p.CIDR)
		if contains(pp, subnet) {
			return p, nil
		}
		if overlaps(pp, subnet) {
			return datastore.IPPool{}, fmt.Errorf("subnet %s overlaps IP pool %s (%s) but does not lie inside it: "+
				"choose a subnet inside %s, or create a pool for it with 'tabby apply -f'", subnet, p.Name, p.CIDR, p.CIDR)
		}
	}
	return datastore.IPPool{}, fmt.Errorf("subnet %s is in no tabby IP pool: create one with 'tabby apply -f' "+
		"(kind: IPPool, spec.cidr: %s), or use a subnet inside an existing pool ('tabby get ippools')", subnet, subnet)
}

// AutoAssign allocates one address for handle, inside within when it is
// valid (a --subnet), else from any pool of within's family (4 when invalid).
func (a *Allocator) AutoAssign(ctx context.Context, within netip.Prefix, handle string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fam := 4
	if within.IsValid() && within.Addr().Is6() {
		fam = 6
	}
	pools, err := a.Pools(ctx, fam)
	if err != nil {
		return netip.Addr{}, err
	}
	var cands []datastore.IPPool
	for _, p := range pools {
		if !within.IsValid() || overlaps(netip.MustParsePrefix(p.CIDR), within) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return netip.Addr{}, fmt.Errorf("%w: no enabled IPv%d pool%s; create one with 'tabby apply -f'", ErrExhausted, fam, inText(within))
	}
	// 1. Our own blocks.
	affine, err := a.affineBlocks(ctx, a.node)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, bp := range affine {
		if !inPools(bp, cands) || (within.IsValid() && !overlaps(bp, within)) {
			continue
		}
		if addr, ok, err := a.allocIn(ctx, bp, handle, within); err != nil || ok {
			return addr, err
		}
	}
	// 2. A new block, claimed for us.
	existing, err := a.existingBlocks(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, p := range cands {
		addr, ok, err := a.claimAndAlloc(ctx, p, existing, handle, within)
		if err != nil || ok {
			return addr, err
		}
	}
	// 3. Borrow from anyone's block.
	for _, bp := range sortedPrefixes(existing) {
		if !inPools(bp, cands) || (within.IsValid() && !overlaps(bp, within)) {
			continue
		}
		if addr, ok, err := a.allocIn(ctx, bp, handle, within); err != nil || ok {
			return addr, err
		}
	}
	names := make([]string, len(cands))
	for i, p := range cands {
		names[i] = p.Name + " (" + p.CIDR + ")"
	}
	return netip.Addr{}, fmt.Errorf("%w in pool %s%s: release addresses or add a pool with 'tabby apply -f'",
		ErrExhausted, strings.Join(names, ", "), inText(within))
}

func inText(p netip.Prefix) string {
	if p.IsValid() {
		return " inside " + p.String()
	}
	return ""
}

// Assign takes a specific address for handle (docker run --ip).
func (a *Allocator) Assign(ctx context.Context, addr netip.Addr, handle string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pool, err := a.poolOf(ctx, addr)
	if err != nil {
		return err
	}
	bp := blockFor(addr, pool.BlockSize)
	for i := 0; i < datastore.MaxRetries; i++ {
		b, rev, err := a.readBlock(ctx, bp)
		if errors.Is(err, datastore.ErrNotFound) {
			// Nobody owns the block yet: claim it for us, as Calico does.
			b, rev = newBlock(bp, pool.Name, a.node), 0
		} else if err != nil {
			return err
		}
		if err := b.assign(addr, handle); err != nil {
			return fmt.Errorf("address %s is already in use: pick another --ip or let tabby choose one: %w", addr, ErrInUse)
		}
		err = a.commitAlloc(ctx, b, rev, handle, rev == 0)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("assign %s: %w", addr, datastore.ErrConflict)
}

// ReleaseIP frees one address; an address that is already free is fine.
func (a *Allocator) ReleaseIP(ctx context.Context, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pool, err := a.poolOf(ctx, addr)
	if err != nil {
		return nil // outside every pool: nothing of ours to release
	}
	bp := blockFor(addr, pool.BlockSize)
	for i := 0; i < datastore.MaxRetries; i++ {
		b, rev, err := a.readBlock(ctx, bp)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		h := b.release(addr)
		if h == "" {
			return nil
		}
		err = a.commitRelease(ctx, b, rev, h, 1)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("release %s: %w", addr, datastore.ErrConflict)
}

// ReleaseHandle frees every address of handle; an unknown handle is fine.
func (a *Allocator) ReleaseHandle(ctx context.Context, handle string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := 0; i < datastore.MaxRetries; i++ {
		var h datastore.Handle
		if _, err := a.store.Get(ctx, datastore.HandleKey(handle), &h); errors.Is(err, datastore.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		done := true
		for cidr := range h.Blocks {
			b, rev, err := a.readBlock(ctx, netip.MustParsePrefix(cidr))
			if errors.Is(err, datastore.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			n := b.releaseHandle(handle)
			if err := a.commitRelease(ctx, b, rev, handle, n); errors.Is(err, datastore.ErrConflict) {
				done = false
				break
			} else if err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
	return fmt.Errorf("release handle %s: %w", handle, datastore.ErrConflict)
}

// poolOf returns the pool that holds addr.
func (a *Allocator) poolOf(ctx context.Context, addr netip.Addr) (datastore.IPPool, error) {
	fam := 4
	if addr.Is6() {
		fam = 6
	}
	pools, err := a.Pools(ctx, fam)
	if err != nil {
		return datastore.IPPool{}, err
	}
	for _, p := range pools {
		if netip.MustParsePrefix(p.CIDR).Contains(addr) {
			return p, nil
		}
	}
	return datastore.IPPool{}, fmt.Errorf("address %s is outside every tabby IP pool: choose an address inside a pool ('tabby get ippools')", addr)
}

func (a *Allocator) readBlock(ctx context.Context, p netip.Prefix) (*block, int64, error) {
	var sb datastore.Block
	rev, err := a.store.Get(ctx, datastore.BlockKey(p.String()), &sb)
	if err != nil {
		return nil, 0, err
	}
	b, err := wrapBlock(&sb)
	return b, rev, err
}

// allocIn tries one existing block, retrying only on conflict.
func (a *Allocator) allocIn(ctx context.Context, bp netip.Prefix, handle string, within netip.Prefix) (netip.Addr, bool, error) {
	for i := 0; i < datastore.MaxRetries; i++ {
		b, rev, err := a.readBlock(ctx, bp)
		if errors.Is(err, datastore.ErrNotFound) {
			return netip.Addr{}, false, nil
		} else if err != nil {
			return netip.Addr{}, false, err
		}
		addr, ok := b.allocate(handle, within)
		if !ok {
			return netip.Addr{}, false, nil
		}
		err = a.commitAlloc(ctx, b, rev, handle, false)
		if err == nil {
			return addr, true, nil
		}
		if !errors.Is(err, datastore.ErrConflict) {
			return netip.Addr{}, false, err
		}
	}
	return netip.Addr{}, false, fmt.Errorf("block %s: %w", bp, datastore.ErrConflict)
}

// claimAndAlloc claims the first unclaimed block of pool (starting at a
// per-node offset so hosts spread out) and allocates from it in one txn.
func (a *Allocator) claimAndAlloc(ctx context.Context, pool datastore.IPPool, existing map[netip.Prefix]bool, handle string, within netip.Prefix) (netip.Addr, bool, error) {
	pp := netip.MustParsePrefix(pool.CIDR)
	if pool.BlockSize < pp.Bits() {
		return netip.Addr{}, false, fmt.Errorf("pool %s: block size /%d is larger than the pool", pool.Name, pool.BlockSize)
	}
	nblocks := uint64(1) << min(uint(pool.BlockSize-pp.Bits()), 62)
	step := uint64(1) << (pp.Addr().BitLen() - pool.BlockSize)
	start := nodeHash(a.node) % nblocks
	probes := min(nblocks, maxClaimProbes)
	for i := uint64(0); i < probes; i++ {
		idx := (start + i) % nblocks
		bp := netip.PrefixFrom(addOffset(pp.Addr(), idx*step), pool.BlockSize)
		if existing[bp] || (within.IsValid() && !overlaps(bp, within)) {
			continue
		}
		b := newBlock(bp, pool.Name, a.node)
		addr, ok := b.allocate(handle, within)
		if !ok {
			continue
		}
		err := a.commitAlloc(ctx, b, 0, handle, true)
		if errors.Is(err, datastore.ErrConflict) {
			existing[bp] = true // another host claimed it first
			continue
		}
		if err != nil {
			return netip.Addr{}, false, err
		}
		existing[bp] = true
		return addr, true, nil
	}
	return netip.Addr{}, false, nil
}

// commitAlloc writes the block (CAS on rev; 0 = new block with our
// affinity) and adds one address to the handle, atomically.
func (a *Allocator) commitAlloc(ctx context.Context, b *block, rev int64, handle string, claim bool) error {
	var h datastore.Handle
	hrev, err := a.store.Get(ctx, datastore.HandleKey(handle), &h)
	if errors.Is(err, datastore.ErrNotFound) {
		h, hrev = datastore.Handle{ID: handle, Node: a.node, Blocks: map[string]int{}}, 0
	} else if err != nil {
		return err
	}
	h.Blocks[b.CIDR]++
	ops := []datastore.Op{
		{Key: datastore.BlockKey(b.CIDR), Value: b.Block, Rev: rev},
		{Key: datastore.HandleKey(handle), Value: &h, Rev: hrev},
	}
	if claim && b.Affinity != "" {
		ops = append(ops, datastore.Op{Key: datastore.AffinityKey(b.Affinity, b.CIDR),
			Value: &datastore.Affinity{Node: b.Affinity, Block: b.CIDR}, Rev: datastore.Any})
	}
	return a.store.Commit(ctx, ops...)
}

// commitRelease writes the block and takes n addresses off the handle.
func (a *Allocator) commitRelease(ctx context.Context, b *block, rev int64, handle string, n int) error {
	ops := []datastore.Op{{Key: datastore.BlockKey(b.CIDR), Value: b.Block, Rev: rev}}
	var h datastore.Handle
	hrev, err := a.store.Get(ctx, datastore.HandleKey(handle), &h)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
	case err != nil:
		return err
	default:
		h.Blocks[b.CIDR] -= n
		if h.Blocks[b.CIDR] <= 0 {
			delete(h.Blocks, b.CIDR)
		}
		if len(h.Blocks) == 0 {
			ops = append(ops, datastore.Op{Key: datastore.HandleKey(handle), Rev: hrev})
		} else {
			ops = append(ops, datastore.Op{Key: datastore.HandleKey(handle), Value: &h, Rev: hrev})
		}
	}
	return a.store.Commit(ctx, ops...)
}

// affineBlocks lists the blocks a node holds affinity for.
func (a *Allocator) affineBlocks(ctx context.Context, node string) ([]netip.Prefix, error) {
	keys, err := a.store.ListKeys(ctx, datastore.AffinitiesOf(node))
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, k := range keys {
		if p, err := netip.ParsePrefix(datastore.KeyToCIDR(k[strings.LastIndex(k, "/")+1:])); err == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out, nil
}

// existingBlocks returns every block that exists, claimed or not.
func (a *Allocator) existingBlocks(ctx context.Context) (map[netip.Prefix]bool, error) {
	keys, err := a.store.ListKeys(ctx, datastore.BlocksDir)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Prefix]bool, len(keys))
	for _, k := range keys {
		if p, err := netip.ParsePrefix(datastore.KeyToCIDR(strings.TrimPrefix(k, datastore.BlocksDir))); err == nil {
			out[p] = true
		}
	}
	return out, nil
}

func inPools(bp netip.Prefix, pools []datastore.IPPool) bool {
	for _, p := range pools {
		if contains(netip.MustParsePrefix(p.CIDR), bp) {
			return true
		}
	}
	return false
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

func nodeHash(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}
