package ipamdriver

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tabbynet/tabby/datastore"
)

// ErrInUse means the requested address is already assigned.
var ErrInUse = errors.New("address already in use")

// block is the in-memory logic over one stored block. It does no I/O: the
// allocator reads a block, changes it here, and writes it back by CAS.
type block struct {
	*datastore.Block
	prefix netip.Prefix
}

func newBlock(prefix netip.Prefix, pool, node string) *block {
	size := 1 << (prefix.Addr().BitLen() - prefix.Bits())
	return &block{
		Block:  &datastore.Block{CIDR: prefix.String(), Pool: pool, Affinity: node, Allocations: make([]string, size)},
		prefix: prefix,
	}
}

func wrapBlock(b *datastore.Block) (*block, error) {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("stored block %q: %w", b.CIDR, err)
	}
	if want := 1 << (p.Addr().BitLen() - p.Bits()); len(b.Allocations) != want {
		return nil, fmt.Errorf("stored block %s has %d slots, want %d", b.CIDR, len(b.Allocations), want)
	}
	return &block{Block: b, prefix: p}, nil
}

// addrAt returns the address at ordinal i of the block.
func (b *block) addrAt(i int) netip.Addr { return addOffset(b.prefix.Addr(), uint64(i)) }

// ordinal returns the slot of addr, or false when addr is outside the block.
func (b *block) ordinal(addr netip.Addr) (int, bool) {
	if !b.prefix.Contains(addr) {
		return 0, false
	}
	return int(offsetOf(b.prefix.Addr(), addr)), true
}

// allocate takes the first free address that lies in within (any address
// when within is not valid) for handle.
func (b *block) allocate(handle string, within netip.Prefix) (netip.Addr, bool) {
	for i, h := range b.Allocations {
		if h != "" {
			continue
		}
		a := b.addrAt(i)
		if within.IsValid() && !within.Contains(a) {
			continue
		}
		b.Allocations[i] = handle
		return a, true
	}
	return netip.Addr{}, false
}

// assign takes a specific address for handle.
func (b *block) assign(addr netip.Addr, handle string) error {
	i, ok := b.ordinal(addr)
	if !ok {
		return fmt.Errorf("%s is not in block %s", addr, b.CIDR)
	}
	if b.Allocations[i] != "" {
		return fmt.Errorf("%s: %w", addr, ErrInUse)
	}
	b.Allocations[i] = handle
	return nil
}

// release frees one address and returns the handle that held it ("" when it
// was free already).
func (b *block) release(addr netip.Addr) string {
	return b.releaseIf(addr, func(string) bool { return true })
}

// releaseIf frees addr only when its holder passes ok, and returns the
// holder it freed ("" when none).
func (b *block) releaseIf(addr netip.Addr, ok func(handle string) bool) string {
	i, in := b.ordinal(addr)
	if !in || b.Allocations[i] == "" || !ok(b.Allocations[i]) {
		return ""
	}
	h := b.Allocations[i]
	b.Allocations[i] = ""
	return h
}

// releaseHandle frees every address of handle and returns how many.
func (b *block) releaseHandle(handle string) int {
	n := 0
	for i, h := range b.Allocations {
		if h == handle {
			b.Allocations[i] = ""
			n++
		}
	}
	return n
}

// inUse lists the assigned addresses with their handles.
func (b *block) inUse() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for i, h := range b.Allocations {
		if h != "" {
			out[b.addrAt(i)] = h
		}
	}
	return out
}

// addOffset adds n to addr (IPv4 or IPv6), wrapping within the family.
func addOffset(addr netip.Addr, n uint64) netip.Addr {
	b := addr.As16()
	carry := n
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := uint64(b[i]) + (carry & 0xff)
		b[i] = byte(sum)
		carry = (carry >> 8) + (sum >> 8)
	}
	out := netip.AddrFrom16(b)
	if addr.Is4() {
		return out.Unmap()
	}
	return out
}

// offsetOf returns addr - base for addresses up to 2^64 apart.
func offsetOf(base, addr netip.Addr) uint64 {
	a, b := base.As16(), addr.As16()
	var x, y uint64
	for i := 8; i < 16; i++ {
		x = x<<8 | uint64(a[i])
		y = y<<8 | uint64(b[i])
	}
	return y - x
}

// blockFor returns the block of size blockBits in pool that holds addr.
func blockFor(addr netip.Addr, blockBits int) netip.Prefix {
	p, _ := addr.Prefix(blockBits)
	return p
}

// overlaps reports whether two prefixes share any address.
func overlaps(a, b netip.Prefix) bool {
	return a.Overlaps(b)
}

// contains reports whether outer holds all of inner.
func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}
