package bgp

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// acceptsLikeGoBGP is how GoBGP's prefix condition judges a path: the
// longest entry containing it decides, by its lengths.
func acceptsLikeGoBGP(es []ownerEntry, r netip.Prefix) bool {
	best := -1
	for _, e := range es {
		if e.P.Bits() <= r.Bits() && e.P.Contains(r.Addr()) && e.P.Bits() > best {
			best = e.P.Bits()
		}
	}
	for _, e := range es {
		if e.P.Bits() == best && e.P.Contains(r.Addr()) && int(e.Len) == r.Bits() {
			return true
		}
	}
	return false
}

func TestOwnerEntriesAcceptExactlyTheGrants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := netip.MustParseAddr("10.64.0.0").As4()
	for round := range 200 {
		grant := map[netip.Prefix]bool{}
		var ps []netip.Prefix
		// Blocks of /26 in a /22, some /28, and borrowed /32s in the
		// blocks not granted, as IPAM grants them (never overlapping).
		used := map[int]bool{}
		for range rng.IntN(16) {
			i := rng.IntN(16)
			if used[i] {
				continue
			}
			used[i] = true
			a := base
			a[2], a[3] = byte(i/4), byte(i%4*64)
			p := netip.PrefixFrom(netip.AddrFrom4(a), 26)
			if rng.IntN(5) == 0 { // a pool of /28 blocks: its four quarters maybe
				for q := range 4 {
					if rng.IntN(2) == 0 {
						a[3] = byte(i%4*64 + q*16)
						p := netip.PrefixFrom(netip.AddrFrom4(a), 28)
						ps, grant[p] = append(ps, p), true
					}
				}
				continue
			}
			ps, grant[p] = append(ps, p), true
		}
		for range rng.IntN(20) {
			i := rng.IntN(16)
			if used[i] {
				continue
			}
			a := base
			a[2], a[3] = byte(i/4), byte(i%4*64+rng.IntN(64))
			p := netip.PrefixFrom(netip.AddrFrom4(a), 32)
			ps, grant[p] = append(ps, p), true
		}
		es := ownerEntries(ps)
		// Every prefix of 22 to 32 bits in the /22 is judged as before.
		for bits := 22; bits <= 32; bits++ {
			for off := 0; off < 1024; off += 1 << (32 - bits) {
				a := base
				a[2], a[3] = byte(off/256), byte(off%256)
				r := netip.PrefixFrom(netip.AddrFrom4(a), bits)
				if got := acceptsLikeGoBGP(es, r); got != grant[r] {
					t.Fatalf("round %d: %v accepted %v, granted %v (grants %v, entries %v)", round, r, got, grant[r], ps, es)
				}
			}
		}
	}
}

func TestOwnerEntriesMergeBlocksSideBySide(t *testing.T) {
	var ps []netip.Prefix
	for i := range 10000 { // the blocks from 10.128.0.0 on, as BenchmarkDaemonMemory claims them
		ps = append(ps, netip.MustParsePrefix(netip.AddrFrom4([4]byte{10, byte(128 + i/1024), byte(i / 4 % 256), byte(i % 4 * 64)}).String()+"/26"))
	}
	es := ownerEntries(ps)
	if len(es) > 8 {
		t.Fatalf("10,000 blocks side by side make %d entries: %v", len(es), es)
	}
	for _, e := range es {
		if e.Len != 26 {
			t.Fatalf("entry %v accepts /%d, want /26", e.P, e.Len)
		}
	}
	v6 := ownerEntries([]netip.Prefix{netip.MustParsePrefix("fd00::/122"), netip.MustParsePrefix("fd00::40/122")})
	if len(v6) != 1 || v6[0] != (ownerEntry{netip.MustParsePrefix("fd00::/121"), 122}) {
		t.Fatalf("two IPv6 sibling blocks: %v", v6)
	}
}

func TestOwnerEntriesKeepOverlappingGrants(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/26"), netip.MustParsePrefix("10.0.0.64/26"), netip.MustParsePrefix("10.0.0.0/25")}
	es := ownerEntries(ps)
	if len(es) != 3 {
		t.Fatalf("overlapping grants merged: %v", es)
	}
	for _, p := range ps {
		if !acceptsLikeGoBGP(es, p) {
			t.Fatalf("%v refused among overlapping grants %v", p, es)
		}
	}
}
