// Package ipamdriver is tabby's Docker IpamDriver: Calico-style block IPAM
// over etcd. Addresses are /32 (/128); pools are carved into blocks that hosts
// claim by affinity.
package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore"
)

const (
	// GatewayV4 is the next hop every container uses; the host answers for it
	// by proxy ARP, so it costs no address in any pool.
	GatewayV4 = "169.254.1.1"

	// PoolAnyV4 is the pool ID of networks created without --subnet. Docker is
	// handed 0.0.0.0/0 for them: libnetwork skips its host-route overlap check
	// for that value, which otherwise loops forever because tabby's own /32
	// routes overlap the real pool.
	PoolAnyV4  = "tabby-any-v4"
	poolPrefix = "tabby-v4:"

	gatewayOption = "com.docker.network.gateway"
	requestType   = "RequestAddressType"

	// DefaultPoolName is the pool created at first start.
	DefaultPoolName = "default-ipv4-ippool"
	// DefaultBlockSize is Calico's IPv4 block size.
	DefaultBlockSize = 26
)

// Driver serves Docker's IpamDriver API.
type Driver struct {
	alloc   *Allocator
	timeout time.Duration
}

var _ ipam.Ipam = (*Driver)(nil)

// New returns the IPAM driver of one node.
func New(store *datastore.Store, node string) *Driver {
	return &Driver{alloc: NewAllocator(store, node), timeout: 30 * time.Second}
}

// Allocator exposes the allocator (CLI, tests, benchmarks).
func (d *Driver) Allocator() *Allocator { return d.alloc }

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// EnsureDefaultPool creates the default pool when no pool exists yet.
func EnsureDefaultPool(ctx context.Context, store *datastore.Store, cidr, ipip, vxlan string) error {
	pools, err := store.ListKeys(ctx, datastore.PoolsDir)
	if err != nil || len(pools) > 0 {
		return err
	}
	p := datastore.IPPool{Name: DefaultPoolName, CIDR: cidr, BlockSize: DefaultBlockSize,
		IPIPMode: ipip, VXLANMode: vxlan, NATOutgoing: true}
	if err := ValidatePool(&p); err != nil {
		return err
	}
	if err := store.Create(ctx, datastore.PoolKey(p.Name), &p); err != nil && !errors.Is(err, datastore.ErrConflict) {
		return err
	}
	return nil
}

// ValidatePool fills defaults and checks a pool, naming the bad field.
func ValidatePool(p *datastore.IPPool) error {
	pr, err := netip.ParsePrefix(p.CIDR)
	if err != nil {
		return fmt.Errorf("IPPool %s: spec.cidr %q is not a CIDR (example: 10.244.0.0/16)", p.Name, p.CIDR)
	}
	if pr.Masked() != pr {
		return fmt.Errorf("IPPool %s: spec.cidr %s has host bits set; use %s", p.Name, p.CIDR, pr.Masked())
	}
	p.CIDR = pr.String()
	if p.BlockSize == 0 {
		p.BlockSize = DefaultBlockSize
		if pr.Addr().Is6() {
			p.BlockSize = 122
		}
	}
	if p.BlockSize < pr.Bits() || p.BlockSize > pr.Addr().BitLen() {
		return fmt.Errorf("IPPool %s: spec.blockSize %d must lie between the pool's prefix length %d and %d",
			p.Name, p.BlockSize, pr.Bits(), pr.Addr().BitLen())
	}
	if pr.Addr().BitLen()-p.BlockSize > 16 {
		return fmt.Errorf("IPPool %s: spec.blockSize %d is too small a prefix (blocks over 65536 addresses); use at least /%d",
			p.Name, p.BlockSize, pr.Addr().BitLen()-16)
	}
	for field, v := range map[string]*string{"ipipMode": &p.IPIPMode, "vxlanMode": &p.VXLANMode} {
		switch *v {
		case "":
			*v = datastore.ModeNever
		case datastore.ModeNever, datastore.ModeAlways, datastore.ModeCrossSubnet:
		default:
			return fmt.Errorf("IPPool %s: spec.%s %q must be Always, CrossSubnet or Never", p.Name, field, *v)
		}
	}
	if p.IPIPMode != datastore.ModeNever && p.VXLANMode != datastore.ModeNever {
		return fmt.Errorf("IPPool %s: spec.ipipMode and spec.vxlanMode cannot both be on; set one of them to Never", p.Name)
	}
	return nil
}

// GetCapabilities implements ipam.Ipam.
func (d *Driver) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

// GetDefaultAddressSpaces implements ipam.Ipam.
func (d *Driver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "TabbyLocal", GlobalDefaultAddressSpace: "TabbyGlobal"}, nil
}

// RequestPool maps a network's --subnet onto a tabby pool.
func (d *Driver) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.V6 {
		return nil, errors.New("tabby does not support IPv6 networks yet: create the network without --ipv6")
	}
	if req.SubPool != "" {
		return nil, fmt.Errorf("--ip-range %s is not supported by tabby: use --subnet with a range inside a pool", req.SubPool)
	}
	for k := range req.Options {
		return nil, fmt.Errorf("unknown IPAM option %q: tabby takes no --ipam-opt options; remove it", k)
	}
	data := map[string]string{gatewayOption: GatewayV4 + "/32"}
	if req.Pool == "" {
		return &ipam.RequestPoolResponse{PoolID: PoolAnyV4, Pool: "0.0.0.0/0", Data: data}, nil
	}
	subnet, err := netip.ParsePrefix(req.Pool)
	if err != nil || !subnet.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q is not an IPv4 CIDR: use --subnet like 10.10.0.0/16", req.Pool)
	}
	if subnet.Masked() != subnet {
		return nil, fmt.Errorf("subnet %s has host bits set: use --subnet %s", req.Pool, subnet.Masked())
	}
	ctx, cancel := d.ctx()
	defer cancel()
	if _, err := d.alloc.PoolFor(ctx, subnet); err != nil {
		return nil, err
	}
	return &ipam.RequestPoolResponse{PoolID: poolPrefix + subnet.String(), Pool: subnet.String(), Data: data}, nil
}

// ReleasePool implements ipam.Ipam; pools outlive networks, so nothing to do.
func (d *Driver) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }

// withinOf returns the --subnet a pool ID stands for (invalid = any pool).
func withinOf(poolID string) (netip.Prefix, error) {
	if poolID == PoolAnyV4 {
		return netip.Prefix{}, nil
	}
	if s, ok := strings.CutPrefix(poolID, poolPrefix); ok {
		if p, err := netip.ParsePrefix(s); err == nil {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pool ID %q was not issued by tabby: create the network with --ipam-driver tabby", poolID)
}

// RequestAddress assigns one /32: the given one (--ip) or the next free one.
func (d *Driver) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	if req.Options[requestType] == gatewayOption {
		return nil, fmt.Errorf("--gateway %s is not supported: tabby containers always route via %s; create the network without --gateway",
			req.Address, GatewayV4)
	}
	within, err := withinOf(req.PoolID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	handle := NewHandle("docker-")
	if req.Address != "" {
		addr, err := netip.ParseAddr(req.Address)
		if err != nil || !addr.Is4() {
			return nil, fmt.Errorf("address %q is not an IPv4 address: use --ip like 10.10.0.5", req.Address)
		}
		if within.IsValid() && !within.Contains(addr) {
			return nil, fmt.Errorf("address %s is outside the network's subnet %s: choose an --ip inside it", addr, within)
		}
		if err := d.alloc.Assign(ctx, addr, handle); err != nil {
			return nil, err
		}
		return &ipam.RequestAddressResponse{Address: addr.String() + "/32"}, nil
	}
	addr, err := d.alloc.AutoAssign(ctx, within, handle)
	if err != nil {
		return nil, err
	}
	return &ipam.RequestAddressResponse{Address: addr.String() + "/32"}, nil
}

// ReleaseAddress frees an address; releasing a free one succeeds.
func (d *Driver) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		if p, perr := netip.ParsePrefix(req.Address); perr == nil {
			addr = p.Addr()
		} else {
			return fmt.Errorf("address %q is not an IP address", req.Address)
		}
	}
	if addr.String() == GatewayV4 {
		return nil
	}
	ctx, cancel := d.ctx()
	defer cancel()
	return d.alloc.ReleaseIP(ctx, addr)
}
