package ipamdriver

import (
	"net/netip"
	"testing"
)

func TestBlockAllocateAssignRelease(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("192.168.18.64/26"), "p", "node00")
	if len(b.Allocations) != 64 {
		t.Fatalf("a /26 block has %d slots, want 64", len(b.Allocations))
	}
	a, ok := b.allocate("h1", netip.Prefix{})
	if !ok || a.String() != "192.168.18.64" {
		t.Fatalf("first address = %v %v, want 192.168.18.64 (Calico hands out the block's first address)", a, ok)
	}
	if err := b.assign(netip.MustParseAddr("192.168.18.70"), "h2"); err != nil {
		t.Fatal(err)
	}
	if err := b.assign(netip.MustParseAddr("192.168.18.70"), "h3"); err == nil {
		t.Fatal("assigning an address in use must fail")
	}
	if err := b.assign(netip.MustParseAddr("192.168.19.1"), "h3"); err == nil {
		t.Fatal("assigning an address outside the block must fail")
	}
	if got := len(b.Allocations) - len(b.inUse()); got != 62 {
		t.Fatalf("free = %d, want 62", got)
	}
	if h := b.release(netip.MustParseAddr("192.168.18.70")); h != "h2" {
		t.Fatalf("release returned handle %q, want h2", h)
	}
	if h := b.release(netip.MustParseAddr("192.168.18.70")); h != "" {
		t.Fatalf("releasing a free address returned %q, want nothing", h)
	}
	b.allocate("h1", netip.Prefix{})
	if n := b.releaseHandle("h1"); n != 2 {
		t.Fatalf("releaseHandle freed %d, want 2", n)
	}
	if got := len(b.Allocations) - len(b.inUse()); got != 64 {
		t.Fatalf("free after release = %d, want 64", got)
	}
}

func TestBlockAllocateWithinSubnetAndFull(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/26"), "p", "n")
	within := netip.MustParsePrefix("10.0.0.32/30")
	var got []string
	for {
		a, ok := b.allocate("h", within)
		if !ok {
			break
		}
		got = append(got, a.String())
	}
	want := []string{"10.0.0.32", "10.0.0.33", "10.0.0.34", "10.0.0.35"}
	if len(got) != len(want) {
		t.Fatalf("allocated %v inside %s, want %v", got, within, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocated %v, want %v", got, want)
		}
	}
	for i := 0; i < 60; i++ {
		if _, ok := b.allocate("x", netip.Prefix{}); !ok {
			t.Fatalf("block filled after %d more, want 60", i)
		}
	}
	if _, ok := b.allocate("x", netip.Prefix{}); ok {
		t.Fatal("a full block handed out a 65th address")
	}
}

func TestAddOffsetAndOffsetOf(t *testing.T) {
	base := netip.MustParseAddr("10.0.0.250")
	if got := addOffset(base, 10).String(); got != "10.0.1.4" {
		t.Fatalf("10.0.0.250 + 10 = %s, want 10.0.1.4", got)
	}
	if got := offsetOf(base, netip.MustParseAddr("10.0.1.4")); got != 10 {
		t.Fatalf("offset = %d, want 10", got)
	}
	v6 := netip.MustParseAddr("fd00::ffff")
	if got := addOffset(v6, 1).String(); got != "fd00::1:0" {
		t.Fatalf("fd00::ffff + 1 = %s", got)
	}
}

func TestWrapBlockRejectsCorruptBlocks(t *testing.T) {
	b := newBlock(netip.MustParsePrefix("10.0.0.0/26"), "p", "n")
	b.Allocations = b.Allocations[:10]
	if _, err := wrapBlock(b.Block); err == nil {
		t.Fatal("a stored block with the wrong slot count must be rejected")
	}
}
