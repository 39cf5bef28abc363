package bgp

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/tabbynet/tabby/datastore"
)

// owners knows, from IPAM's blocks and handles, which node may announce
// which prefix: a block only by the node its affinity names, an address
// outside its holder's blocks (borrowed) only by the node its handle names.
// It follows one cache of the ipam/ keys, so a block's change costs the
// work of that block; it marks the nodes whose prefixes changed dirty. Of
// a block's addresses it keeps only the odd ones: borrowed, or whose handle
// it has not seen yet (a listing has the blocks before the handles); the
// rest, nearly all of a cluster's, are their block's node's already.
type owners struct {
	log *slog.Logger

	mu       sync.Mutex
	blocks   map[string]ownedBlock                // block key → what it grants
	handles  map[string]string                    // handle ID → node
	names    map[string]string                    // node names, held once
	byHandle map[string][]addrIn                  // handle ID → its odd addresses
	grants   map[string]map[netip.Prefix]struct{} // node → prefixes it may announce
	dirty    map[string]bool
	changed  chan struct{}
}

// ownedBlock is what the owners keep of a block; its CIDR is its key's
// (blockCIDR), checked when it came.
type ownedBlock struct {
	affinity string
	odd      map[netip.Addr]string // address → handle ID, for the odd addresses only
}

// addrIn is an address and the key of its block.
type addrIn struct {
	addr  netip.Addr
	block string
}

func newOwners(log *slog.Logger) *owners {
	return &owners{log: log, blocks: map[string]ownedBlock{}, handles: map[string]string{}, names: map[string]string{},
		byHandle: map[string][]addrIn{}, grants: map[string]map[netip.Prefix]struct{}{},
		dirty: map[string]bool{}, changed: make(chan struct{}, 1)}
}

// handle is the cache's handler for every key under ipam/.
func (o *owners) handle(ch datastore.Change) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case strings.HasPrefix(ch.Key, datastore.BlocksDir):
		o.setBlock(ch)
	case strings.HasPrefix(ch.Key, datastore.HandlesDir):
		o.setHandle(ch)
	default:
		return // affinities: the block itself names its node
	}
	if len(o.dirty) > 0 {
		select {
		case o.changed <- struct{}{}:
		default:
		}
	}
}

func (o *owners) setBlock(ch datastore.Change) {
	old, had := o.blocks[ch.Key]
	var b ownedBlock
	var taken []allocation
	ok := false
	if !ch.Deleted {
		var err error
		if b, taken, err = parseBlock(ch.Key, ch.Value); err != nil {
			o.log.Warn("IPAM block ignored: no node may announce it", "key", ch.Key, "err", err)
		} else {
			ok = true
		}
	}
	before, after := map[grantKey]bool{}, map[grantKey]bool{}
	if had {
		before = o.blockGrants(ch.Key, old)
		for a, h := range old.odd {
			o.unlink(h, a)
		}
		delete(o.blocks, ch.Key)
	}
	if ok {
		b.affinity = o.name(b.affinity)
		for _, t := range taken {
			if n := o.handles[t.handle]; n == "" || n != b.affinity {
				if b.odd == nil {
					b.odd = map[netip.Addr]string{}
				}
				b.odd[t.addr] = t.handle
				o.byHandle[t.handle] = append(o.byHandle[t.handle], addrIn{t.addr, ch.Key})
			}
		}
		o.blocks[ch.Key] = b
		after = o.blockGrants(ch.Key, b)
	}
	// Only what differs marks a node dirty: an address taken in a node's
	// own block changes no grant.
	for g := range before {
		if !after[g] {
			o.ungrant(g.node, g.prefix)
		}
	}
	for g := range after {
		if !before[g] {
			o.grant(g.node, g.prefix)
		}
	}
}

// unlink forgets that handle h holds the odd address a.
func (o *owners) unlink(h string, a netip.Addr) {
	as := slices.DeleteFunc(o.byHandle[h], func(x addrIn) bool { return x.addr == a })
	if len(as) == 0 {
		delete(o.byHandle, h)
	} else {
		o.byHandle[h] = as
	}
}

// name is n, held once however many records name it.
func (o *owners) name(n string) string {
	if n == "" {
		return ""
	}
	if held, ok := o.names[n]; ok {
		return held
	}
	o.names[n] = n
	return n
}

type grantKey struct {
	node   string
	prefix netip.Prefix
}

// blockGrants is what one block grants: itself to its affinity, each
// address held by another node's handle to that node.
func (o *owners) blockGrants(key string, b ownedBlock) map[grantKey]bool {
	out := map[grantKey]bool{}
	if b.affinity != "" {
		out[grantKey{b.affinity, blockCIDR(key)}] = true
	}
	for a, h := range b.odd {
		if n := o.handles[h]; n != "" && n != b.affinity {
			out[grantKey{n, netip.PrefixFrom(a, a.BitLen())}] = true
		}
	}
	return out
}

func (o *owners) setHandle(ch datastore.Change) {
	id := ch.Key[len(datastore.HandlesDir):]
	node := ""
	if !ch.Deleted {
		var h datastore.Handle
		if err := json.Unmarshal(ch.Value, &h); err != nil || !datastore.ValidName(h.Node) {
			o.log.Warn("IPAM handle ignored: its addresses go unannounced", "key", ch.Key, "err", err, "node", h.Node)
		} else {
			node = o.name(h.Node)
		}
	}
	old := o.handles[id]
	if old == node {
		return
	}
	if node == "" {
		delete(o.handles, id)
	} else {
		o.handles[id] = node
	}
	// Its odd addresses: granted to the new node if borrowed, no longer odd
	// if in its node's own block. A handle that moves off its block's node
	// (tabby never does so) is granted its addresses at the block's next
	// change: until then it may announce less, never more.
	for _, x := range slices.Clone(o.byHandle[id]) {
		b := o.blocks[x.block]
		p := netip.PrefixFrom(x.addr, x.addr.BitLen())
		if old != "" && old != b.affinity {
			o.ungrant(old, p)
		}
		switch {
		case node == "":
		case node != b.affinity:
			o.grant(node, p)
		default:
			delete(b.odd, x.addr)
			if len(b.odd) == 0 {
				b.odd = nil // an emptied map keeps its room
				o.blocks[x.block] = b
			}
			o.unlink(id, x.addr)
		}
	}
}

func (o *owners) grant(node string, p netip.Prefix) {
	if o.grants[node] == nil {
		o.grants[node] = map[netip.Prefix]struct{}{}
	}
	o.grants[node][p] = struct{}{}
	o.dirty[node] = true
}

func (o *owners) ungrant(node string, p netip.Prefix) {
	if _, ok := o.grants[node][p]; !ok {
		return
	}
	delete(o.grants[node], p)
	if len(o.grants[node]) == 0 {
		delete(o.grants, node)
	}
	o.dirty[node] = true
}

// takeDirty returns the nodes whose grants changed since the last call, and
// clears the mark.
func (o *owners) takeDirty() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.dirty))
	for n := range o.dirty {
		out = append(out, n)
	}
	clear(o.dirty)
	return out
}

// of returns the prefixes node may announce.
func (o *owners) of(node string) []netip.Prefix {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]netip.Prefix, 0, len(o.grants[node]))
	for p := range o.grants[node] {
		out = append(out, p)
	}
	return out
}

// allocation is a taken address of a block and its handle.
type allocation struct {
	addr   netip.Addr
	handle string
}

// parseBlock checks a stored block before it grants anything: its CIDR is
// the one its key names, it has one slot per address, and its node names
// are names. It returns the block and its taken addresses.
func parseBlock(key string, value []byte) (ownedBlock, []allocation, error) {
	var b datastore.Block
	if err := json.Unmarshal(value, &b); err != nil {
		return ownedBlock{}, nil, err
	}
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || p != p.Masked() || datastore.BlockKey(p.String()) != key {
		return ownedBlock{}, nil, fmt.Errorf("cidr %q does not match its key", b.CIDR)
	}
	host := p.Addr().BitLen() - p.Bits()
	if host > 16 || len(b.Allocations) != 1<<host {
		return ownedBlock{}, nil, fmt.Errorf("block %s has %d slots", b.CIDR, len(b.Allocations))
	}
	if b.Affinity != "" && !datastore.ValidName(b.Affinity) {
		return ownedBlock{}, nil, fmt.Errorf("affinity %q is not a node name", b.Affinity)
	}
	var taken []allocation
	a := p.Addr()
	for _, h := range b.Allocations {
		if h != "" {
			taken = append(taken, allocation{a, h})
		}
		a = a.Next()
	}
	return ownedBlock{affinity: b.Affinity}, taken, nil
}

// blockCIDR is the CIDR a block's key names; parseBlock has checked it.
func blockCIDR(key string) netip.Prefix {
	p, _ := netip.ParsePrefix(datastore.KeyToCIDR(strings.TrimPrefix(key, datastore.BlocksDir)))
	return p
}
