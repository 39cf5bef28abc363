package bgp

import (
	"cmp"
	"net/netip"
	"slices"
)

// ownerEntry is one entry of a node's owner prefix set: it accepts the
// prefixes of exactly Len bits inside P. A node's blocks usually lie side
// by side (IPAM hands a node the blocks after its last), so merging them
// keeps GoBGP's set, and the work of each change to it, small: 10,000
// blocks of one node are a handful of entries instead of 10,000.
type ownerEntry struct {
	P   netip.Prefix
	Len uint8
}

// ownerEntries is the fewest entries accepting exactly the grants ps (of
// one family): siblings of one length merge into their parent, again and
// again. GoBGP matches a path against the longest entry containing it
// only, so merging is exact only while the grants do not overlap; grants
// that do (bad IPAM data: one block inside another) are kept as they are.
func ownerEntries(ps []netip.Prefix) []ownerEntry {
	ps = slices.Clone(ps)
	for i := range ps {
		ps[i] = ps[i].Masked()
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	ps = slices.Compact(ps)
	exact := func() []ownerEntry {
		out := make([]ownerEntry, len(ps))
		for i, p := range ps {
			out[i] = ownerEntry{p, uint8(p.Bits())}
		}
		return out
	}
	// Sorted by address, disjoint prefixes never contain their successor's
	// first address; nested ones do.
	for i := 1; i < len(ps); i++ {
		if ps[i-1].Contains(ps[i].Addr()) {
			return exact()
		}
	}
	byLen := map[int]map[netip.Prefix]bool{}
	for _, p := range ps {
		if byLen[p.Bits()] == nil {
			byLen[p.Bits()] = map[netip.Prefix]bool{}
		}
		byLen[p.Bits()][p] = true
	}
	var out []ownerEntry
	for l, level := range byLen {
		for bits := l; len(level) > 0; bits-- {
			up := map[netip.Prefix]bool{}
			for p := range level {
				if !level[p] {
					continue // merged with its sibling already
				}
				if bits > 0 {
					if s := sibling(p); level[s] {
						level[p], level[s] = false, false
						up[netip.PrefixFrom(p.Addr(), bits-1).Masked()] = true
						continue
					}
				}
				out = append(out, ownerEntry{p, uint8(l)})
			}
			level = up
		}
	}
	slices.SortFunc(out, func(a, b ownerEntry) int {
		return cmp.Or(a.P.Addr().Compare(b.P.Addr()), cmp.Compare(a.P.Bits(), b.P.Bits()), cmp.Compare(a.Len, b.Len))
	})
	return out
}

// sibling is the other half of p's parent.
func sibling(p netip.Prefix) netip.Prefix {
	b := p.Addr().AsSlice()
	i := p.Bits() - 1
	b[i/8] ^= 0x80 >> (i % 8)
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, p.Bits())
}
