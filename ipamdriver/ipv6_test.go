package ipamdriver

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore"
)

// IPv6 through Docker's IPAM calls: ::/0 for networks without an IPv6
// subnet, /128 addresses from /122 blocks of the default IPv6 pool, --ip6,
// and the link-local gateway that costs no address.
func TestIPv6Addresses(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := EnsureDefaultPools(ctx, st, "192.168.0.0/16", "Never", "Never", "fd00:192:168::/48"); err != nil {
		t.Fatal(err)
	}
	var p6 datastore.IPPool
	if _, err := st.Get(ctx, datastore.PoolKey(DefaultPoolNameV6), &p6); err != nil {
		t.Fatal(err)
	}
	if p6.BlockSize != 122 || p6.NATOutgoing {
		t.Fatalf("default IPv6 pool %+v: want blockSize 122 and no outgoing NAT", p6)
	}
	d := New(st, "node00", true)
	pool, err := d.RequestPool(&ipam.RequestPoolRequest{V6: true})
	if err != nil || pool.Pool != "::/0" || pool.Data[gatewayOption] != "fe80::1/64" {
		t.Fatalf("RequestPool(v6) = %+v, %v", pool, err)
	}
	seen := map[string]bool{}
	var first netip.Prefix
	for i := 0; i < 70; i++ { // more than one /122 block
		r, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: pool.PoolID})
		if err != nil {
			t.Fatal(err)
		}
		pfx := netip.MustParsePrefix(r.Address)
		if pfx.Bits() != 128 || !netip.MustParsePrefix("fd00:192:168::/48").Contains(pfx.Addr()) || seen[r.Address] {
			t.Fatalf("address %d = %s: want a new /128 in fd00:192:168::/48", i, r.Address)
		}
		if i == 0 {
			first = pfx
		}
		seen[r.Address] = true
	}
	blocks, err := st.ListKeys(ctx, datastore.AffinitiesOf("node00"))
	if err != nil || len(blocks) != 2 {
		t.Fatalf("70 addresses should fill 2 blocks of 64, node has %v (%v)", blocks, err)
	}
	b := blockOf(t, st, netip.PrefixFrom(first.Addr(), 122).Masked().String())
	if len(b.Allocations) != 64 {
		t.Fatalf("block %s has %d slots, want 64", b.CIDR, len(b.Allocations))
	}
	// --ip6 inside an IPv6 --subnet; an IPv4 address there is refused.
	sub, err := d.RequestPool(&ipam.RequestPoolRequest{V6: true, Pool: "fd00:192:168:7::/64"})
	if err != nil || sub.PoolID != poolPrefixV6+"fd00:192:168:7::/64" {
		t.Fatalf("RequestPool(v6 subnet) = %+v, %v", sub, err)
	}
	r, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: sub.PoolID, Address: "fd00:192:168:7::77"})
	if err != nil || r.Address != "fd00:192:168:7::77/128" {
		t.Fatalf("--ip6: %+v, %v", r, err)
	}
	if _, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: sub.PoolID, Address: "10.0.0.1"}); err == nil || !strings.Contains(err.Error(), "--ip6") {
		t.Fatalf("IPv4 address in an IPv6 pool: %v", err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: sub.PoolID, Address: "fd00:192:168:7::77/128"}); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: pool.PoolID, Address: "fe80::1"}); err != nil {
		t.Fatalf("releasing the gateway must be a no-op: %v", err)
	}
	// An IPv4 subnet given as the IPv6 one is refused, naming the input.
	if _, err := d.RequestPool(&ipam.RequestPoolRequest{V6: true, Pool: "10.9.0.0/16"}); err == nil || !strings.Contains(err.Error(), `"10.9.0.0/16" is not an IPv6 CIDR`) {
		t.Fatalf("IPv4 subnet as IPv6: %v", err)
	}
}

// A host without IPv6 refuses --ipv6 networks with one clear error.
func TestIPv6RefusedWithoutHostIPv6(t *testing.T) {
	d := New(newStore(t), "node00", false)
	if _, err := d.RequestPool(&ipam.RequestPoolRequest{V6: true}); !errors.Is(err, ErrNoIPv6) {
		t.Fatalf("RequestPool(v6) without host IPv6: %v", err)
	}
}

// IPv6 pools cannot tunnel: tabby routes them with BGP.
func TestIPv6PoolRefusesEncapsulation(t *testing.T) {
	p := datastore.IPPool{Name: "v6", CIDR: "fd00:1::/64", VXLANMode: datastore.ModeAlways}
	if err := ValidatePool(&p); err == nil || !strings.Contains(err.Error(), "vxlanMode") {
		t.Fatalf("VXLAN IPv6 pool: %v", err)
	}
}
