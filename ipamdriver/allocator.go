package ipamdriver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

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
	// view, when set, is where pools and affinities are read (reads.go);
	// lastRev is the revision of the allocator's last write (or of etcd
	// after a lost CAS), which the view must hold before it is read.
	view    *datastore.View
	lastRev atomic.Int64
	// mu serialises this host's writes: they all contend for the same
	// affine block, and a CAS lost to ourselves is wasted work. It guards
	// blocks, the cache of blocks as of their last known revision.
	mu     sync.Mutex
	blocks map[netip.Prefix]*cachedBlock
	// pools and affine cache the pool list and this node's blocks between
	// batches; nil means read them again.
	pools  []datastore.KV
	affine []netip.Prefix
	// qmu guards the queue of AutoAssign calls and whether a caller is
	// already committing batches for everyone (the leader).
	qmu     sync.Mutex
	queue   []*autoReq
	leading bool
	// txn sends one transaction to etcd (store.CommitRev; a test puts a
	// link that loses or delays transactions here).
	txn func(ctx context.Context, ops ...datastore.Op) (int64, error)
}

// NewAllocator returns the allocator of one node.
func NewAllocator(store *datastore.Store, node string) *Allocator {
	return &Allocator{store: store, node: node, txn: store.CommitRev}
}

// NewHandle returns a fresh allocation handle ID.
func NewHandle(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Pools returns the enabled pools of one family (4 or 6), sorted by CIDR.
func (a *Allocator) Pools(ctx context.Context, family int) ([]datastore.IPPool, error) {
	all, err := a.poolList(ctx)
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
	p, err := a.poolFor(ctx, fam, subnet)
	if err != nil && a.catchUp(ctx) {
		p, err = a.poolFor(ctx, fam, subnet) // the view may lag a new pool
	}
	return p, err
}

func (a *Allocator) poolFor(ctx context.Context, fam int, subnet netip.Prefix) (datastore.IPPool, error) {
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
	a.invalidate() // this write moves revisions the batch cache holds
	pool, err := a.poolOf(ctx, addr, false)
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
		if errors.Is(err, datastore.ErrUnavailable) {
			a.fenceLater(unsure{blocks: map[netip.Prefix]string{bp: pool.Name}, addrs: map[netip.Addr]string{addr: handle}})
		}
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("assign %s: %w", addr, datastore.ErrConflict)
}

// ReleaseIP frees one address, whoever holds it; an address that is
// already free is fine.
func (a *Allocator) ReleaseIP(ctx context.Context, addr netip.Addr) error {
	return a.ReleaseIPIf(ctx, addr, func(string) bool { return true })
}

// ReleaseIPIf frees addr only when its holder passes ok (a release that
// names an address alone must not free what another owner holds now).
func (a *Allocator) ReleaseIPIf(ctx context.Context, addr netip.Addr, ok func(handle string) bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invalidate() // this write moves revisions the batch cache holds
	pool, err := a.poolOf(ctx, addr, true)
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
		h := b.releaseIf(addr, ok)
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
	a.invalidate() // this write moves revisions the batch cache holds
	for i := 0; i < datastore.MaxRetries; i++ {
		h, _, err := get[datastore.Handle](ctx, a, datastore.HandleKey(handle))
		if errors.Is(err, datastore.ErrNotFound) {
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
// A disabled pool counts only with disabled true (releases: an address of a
// pool disabled since it was assigned must still go back).
func (a *Allocator) poolOf(ctx context.Context, addr netip.Addr, disabled bool) (datastore.IPPool, error) {
	p, err := a.poolOfOnce(ctx, addr, disabled)
	if err != nil && a.catchUp(ctx) {
		p, err = a.poolOfOnce(ctx, addr, disabled) // the view may lag a new pool
	}
	return p, err
}

func (a *Allocator) poolOfOnce(ctx context.Context, addr netip.Addr, disabled bool) (datastore.IPPool, error) {
	pools, err := a.poolList(ctx)
	if err != nil {
		return datastore.IPPool{}, err
	}
	for _, p := range pools {
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil && pp.Contains(addr) && (disabled || !p.Disabled) {
			return p, nil
		}
	}
	return datastore.IPPool{}, fmt.Errorf("address %s is outside every tabby IP pool: choose an address inside a pool ('tabby get ippools')", addr)
}

func (a *Allocator) readBlock(ctx context.Context, p netip.Prefix) (*block, int64, error) {
	sb, rev, err := get[datastore.Block](ctx, a, datastore.BlockKey(p.String()))
	if err != nil {
		return nil, 0, err
	}
	b, err := wrapBlock(&sb)
	return b, rev, err
}

// unclaimedBlock returns the first block of pool that no one has claimed,
// searching from a per-node offset so hosts spread over the pool, that can
// hold an address inside within.
func (a *Allocator) unclaimedBlock(pool datastore.IPPool, existing map[netip.Prefix]bool, within netip.Prefix) (netip.Prefix, bool) {
	pp, err := netip.ParsePrefix(pool.CIDR)
	if err != nil || pool.BlockSize < pp.Bits() {
		return netip.Prefix{}, false
	}
	// Offsets into the pool must fit in 64 bits: an IPv6 pool searches its
	// first 2^(63-host bits) blocks, far more than anyone claims.
	hostBits := pp.Addr().BitLen() - pool.BlockSize
	nblocks := uint64(1) << min(uint(pool.BlockSize-pp.Bits()), uint(63-hostBits))
	step := uint64(1) << hostBits
	start := nodeHash(a.node) % nblocks
	for i := uint64(0); i < min(nblocks, maxClaimProbes); i++ {
		bp := netip.PrefixFrom(addOffset(pp.Addr(), ((start+i)%nblocks)*step), pool.BlockSize)
		if !existing[bp] && (!within.IsValid() || overlaps(bp, within)) {
			return bp, true
		}
	}
	return netip.Prefix{}, false
}

// commitAlloc writes the block (CAS on rev; 0 = new block with our
// affinity) and adds one address to the handle, atomically.
func (a *Allocator) commitAlloc(ctx context.Context, b *block, rev int64, handle string, claim bool) error {
	h, hrev, err := get[datastore.Handle](ctx, a, datastore.HandleKey(handle))
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
	_, err = a.commit(ctx, ops...)
	return err
}

// commitRelease writes the block and takes n addresses off the handle.
func (a *Allocator) commitRelease(ctx context.Context, b *block, rev int64, handle string, n int) error {
	op, err := a.handleRelease(ctx, handle, b.CIDR, n)
	if err != nil {
		return err
	}
	ops := append([]datastore.Op{{Key: datastore.BlockKey(b.CIDR), Value: b.Block, Rev: rev}}, op...)
	_, err = a.commit(ctx, ops...)
	return err
}

// handleRelease returns the write that takes n addresses of block cidr off
// handle's record (none when the record is gone), deleting it when it
// holds nothing more.
func (a *Allocator) handleRelease(ctx context.Context, handle, cidr string, n int) ([]datastore.Op, error) {
	h, hrev, err := get[datastore.Handle](ctx, a, datastore.HandleKey(handle))
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	h.Blocks[cidr] -= n
	if h.Blocks[cidr] <= 0 {
		delete(h.Blocks, cidr)
	}
	if len(h.Blocks) == 0 {
		return []datastore.Op{{Key: datastore.HandleKey(handle), Rev: hrev}}, nil
	}
	return []datastore.Op{{Key: datastore.HandleKey(handle), Value: &h, Rev: hrev}}, nil
}

// affineBlocks lists the blocks a node holds affinity for.
func (a *Allocator) affineBlocks(ctx context.Context, node string) ([]netip.Prefix, error) {
	keys, err := a.keys(ctx, datastore.AffinitiesOf(node))
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
	keys, err := a.keys(ctx, datastore.BlocksDir)
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

// invalidate drops everything cached between batches.
func (a *Allocator) invalidate() { a.blocks, a.pools, a.affine = nil, nil, nil }

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func nodeHash(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}
