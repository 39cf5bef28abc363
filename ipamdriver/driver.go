// Package ipamdriver is tabby's Docker IpamDriver: Calico-style block IPAM
// over etcd. Addresses are /32 (/128); pools are carved into blocks that hosts
// claim by affinity.
package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

	// GatewayV6 is the IPv6 next hop of every container: the host side of
	// each veth carries it as a link-local address (link-local addresses are
	// per link, so every veth can have the same one), so the host answers
	// neighbour solicitations for it without proxy NDP, whose switch is a
	// sysctl that a managed plugin cannot write.
	GatewayV6 = "fe80::1"
	// PoolAnyV6 is the IPv6 pool ID of --ipv6 networks without an IPv6
	// --subnet; Docker is handed ::/0 for them.
	PoolAnyV6    = "tabby-any-v6"
	poolPrefixV6 = "tabby-v6:"

	gatewayOption = "com.docker.network.gateway"
	requestType   = "RequestAddressType"

	// DefaultPoolName is the pool created at first start.
	DefaultPoolName = "default-ipv4-ippool"
	// DefaultPoolNameV6 is the IPv6 pool created at first start.
	DefaultPoolNameV6 = "default-ipv6-ippool"
	// DefaultBlockSize is Calico's IPv4 block size.
	DefaultBlockSize = 26
	// DefaultBlockSizeV6 is Calico's IPv6 block size.
	DefaultBlockSizeV6 = 122
)

// ErrNoIPv6 means IPv6 was asked of a host that has no IPv6 address for
// tabby.
var ErrNoIPv6 = errors.New("this host runs tabby without IPv6: start tabby with --ip6 ADDRESS or --ip6 autodetect (env IP6), or create the network without --ipv6")

// Driver serves Docker's IpamDriver API.
type Driver struct {
	alloc   *Allocator
	timeout time.Duration
	ipv6    bool
}

var _ ipam.Ipam = (*Driver)(nil)

// New returns the IPAM driver of one node; ipv6 says whether the node takes
// part in IPv6 (has an IPv6 address for tabby).
func New(store *datastore.Store, node string, ipv6 bool) *Driver {
	return &Driver{alloc: NewAllocator(store, node), timeout: 30 * time.Second, ipv6: ipv6}
}

// Allocator exposes the allocator (CLI, tests, benchmarks).
func (d *Driver) Allocator() *Allocator { return d.alloc }

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// EnsureDefaultPools creates the default IPv4 pool when there is no IPv4
// pool, and the default IPv6 pool (cidrV6, "" for none) when there is no
// IPv6 pool. Outgoing NAT is on for the IPv4 one only, as in Calico.
func EnsureDefaultPools(ctx context.Context, store *datastore.Store, cidr, ipip, vxlan, cidrV6 string) error {
	for i := 0; i < datastore.MaxRetries; i++ {
		err := ensureDefaultPoolsOnce(ctx, store, cidr, ipip, vxlan, cidrV6)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("default pools: %w", datastore.ErrConflict)
}

// ensureDefaultPoolsOnce creates the missing default pools in one
// transaction on the pools' version (a pool someone else creates meanwhile
// makes it a conflict, and the next try sees that pool).
func ensureDefaultPoolsOnce(ctx context.Context, store *datastore.Store, cidr, ipip, vxlan, cidrV6 string) error {
	ver, verRev, err := datastore.PoolsVersion(ctx, store)
	if err != nil {
		return err
	}
	pools, err := datastore.ListAs[datastore.IPPool](ctx, store, datastore.PoolsDir)
	if err != nil {
		return err
	}
	have := map[bool]bool{} // by "is IPv4"
	for _, p := range pools {
		if pr, err := netip.ParsePrefix(p.CIDR); err == nil {
			have[pr.Addr().Is4()] = true
		}
	}
	var ops []datastore.Op
	for _, p := range []datastore.IPPool{
		{Name: DefaultPoolName, CIDR: cidr, BlockSize: DefaultBlockSize, IPIPMode: ipip, VXLANMode: vxlan, NATOutgoing: true},
		{Name: DefaultPoolNameV6, CIDR: cidrV6, BlockSize: DefaultBlockSizeV6},
	} {
		v4 := p.Name == DefaultPoolName
		if have[v4] || p.CIDR == "" {
			continue
		}
		if err := ValidatePool(&p); err != nil {
			return err
		}
		ops = append(ops, datastore.Op{Key: datastore.PoolKey(p.Name), Value: &p, Rev: 0})
	}
	if len(ops) == 0 {
		return nil
	}
	ops = append(ops, datastore.Op{Key: datastore.PoolsVersionKey, Value: ver + 1, Rev: verRev})
	return store.Commit(ctx, ops...)
}

// ValidatePool fills defaults and checks a pool, naming the bad field.
func ValidatePool(p *datastore.IPPool) error {
	pr, err := netip.ParsePrefix(p.CIDR)
	if err == nil && pr.Masked() == pr {
		p.CIDR = pr.String()
		if p.BlockSize == 0 {
			p.BlockSize = DefaultBlockSize
			if pr.Addr().Is6() {
				p.BlockSize = DefaultBlockSizeV6
			}
		}
	}
	for _, v := range []*string{&p.IPIPMode, &p.VXLANMode} {
		if *v == "" {
			*v = datastore.ModeNever
		}
	}
	return p.Check("")
}

// GetCapabilities implements ipam.Ipam.
func (d *Driver) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

// GetDefaultAddressSpaces implements ipam.Ipam.
func (d *Driver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: "TabbyLocal", GlobalDefaultAddressSpace: "TabbyGlobal"}, nil
}

// RequestPool maps a network's --subnet (IPv4, or IPv6 with --ipv6) onto a
// tabby pool.
func (d *Driver) RequestPool(req *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if req.V6 && !d.ipv6 {
		return nil, ErrNoIPv6
	}
	if req.SubPool != "" {
		return nil, fmt.Errorf("--ip-range %s is not supported by tabby: use --subnet with a range inside a pool", req.SubPool)
	}
	for k := range req.Options {
		return nil, fmt.Errorf("unknown IPAM option %q: tabby takes no --ipam-opt options; remove it", k)
	}
	anyID, anyPool, prefix, gw, family, example := PoolAnyV4, "0.0.0.0/0", poolPrefix, GatewayV4+"/32", "IPv4", "10.10.0.0/16"
	if req.V6 {
		anyID, anyPool, prefix, gw, family, example = PoolAnyV6, "::/0", poolPrefixV6, GatewayV6+"/64", "IPv6", "fd00:10::/64"
	}
	data := map[string]string{gatewayOption: gw}
	if req.Pool == "" {
		return &ipam.RequestPoolResponse{PoolID: anyID, Pool: anyPool, Data: data}, nil
	}
	subnet, err := netip.ParsePrefix(req.Pool)
	if err != nil || subnet.Addr().Is6() != req.V6 {
		return nil, fmt.Errorf("subnet %q is not an %s CIDR: use --subnet like %s", req.Pool, family, example)
	}
	if subnet.Masked() != subnet {
		return nil, fmt.Errorf("subnet %s has host bits set: use --subnet %s", req.Pool, subnet.Masked())
	}
	ctx, cancel := d.ctx()
	defer cancel()
	if _, err := d.alloc.PoolFor(ctx, subnet); err != nil {
		return nil, err
	}
	return &ipam.RequestPoolResponse{PoolID: prefix + subnet.String(), Pool: subnet.String(), Data: data}, nil
}

// ReleasePool implements ipam.Ipam; pools outlive networks, so nothing to do.
func (d *Driver) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }

// withinOf returns the --subnet a pool ID stands for (invalid = any IPv4
// pool, ::/0 = any IPv6 pool).
func withinOf(poolID string) (netip.Prefix, error) {
	switch poolID {
	case PoolAnyV4:
		return netip.Prefix{}, nil
	case PoolAnyV6:
		return netip.MustParsePrefix("::/0"), nil
	}
	for _, pre := range []string{poolPrefix, poolPrefixV6} {
		if s, ok := strings.CutPrefix(poolID, pre); ok {
			if p, err := netip.ParsePrefix(s); err == nil {
				return p, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("pool ID %q was not issued by tabby: create the network with --ipam-driver tabby", poolID)
}

// RequestAddress assigns one /32 (/128): the given one (--ip, --ip6) or the
// next free one.
func (d *Driver) RequestAddress(req *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	within, err := withinOf(req.PoolID)
	if err != nil {
		return nil, err
	}
	v6 := within.IsValid() && within.Addr().Is6()
	flag, family, example, gw := "--ip", "IPv4", "10.10.0.5", GatewayV4
	if v6 {
		flag, family, example, gw = "--ip6", "IPv6", "fd00:10::5", GatewayV6
	}
	if req.Options[requestType] == gatewayOption {
		return nil, fmt.Errorf("--gateway %s is not supported: tabby containers always route via %s; create the network without --gateway",
			req.Address, gw)
	}
	var fixed netip.Addr
	if req.Address != "" {
		fixed, err = netip.ParseAddr(req.Address)
		if err != nil || fixed.Is6() != v6 {
			return nil, fmt.Errorf("address %q is not an %s address: use %s like %s", req.Address, family, flag, example)
		}
		if within.IsValid() && !within.Contains(fixed) {
			return nil, fmt.Errorf("address %s is outside the network's subnet %s: choose an %s inside it", fixed, within, flag)
		}
	}
	ctx, cancel := d.ctx()
	defer cancel()
	// Through an etcd election the request is made again, each time under
	// a handle of its own: an attempt etcd may still apply is undone by
	// the allocator (fence.go), never mistaken for the one that answered.
	var addr netip.Addr
	var tried []string
	err = d.alloc.store.Again(ctx, func(ctx context.Context) error {
		a, handle, err := d.assignOnce(ctx, within, fixed)
		if errors.Is(err, ErrInUse) && len(tried) > 0 {
			// An earlier attempt may hold --ip: it is ours, and unused.
			for _, h := range tried {
				if rerr := d.alloc.ReleaseHandle(ctx, h); rerr != nil {
					return err
				}
			}
			tried = nil
			a, handle, err = d.assignOnce(ctx, within, fixed)
		}
		tried = append(tried, handle)
		addr = a
		return err
	})
	if err != nil {
		return nil, err
	}
	return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(addr, addr.BitLen()).String()}, nil
}

// assignOnce takes fixed (when valid) or any address within, under a new
// handle.
func (d *Driver) assignOnce(ctx context.Context, within netip.Prefix, fixed netip.Addr) (netip.Addr, string, error) {
	handle := NewHandle(dockerHandlePrefix)
	var err error
	addr := fixed
	if fixed.IsValid() {
		err = d.alloc.Assign(ctx, fixed, handle)
	} else {
		addr, err = d.alloc.AutoAssign(ctx, within, handle)
	}
	return addr, handle, err
}

// ReleaseAddress frees an address; releasing a free one succeeds. While
// etcd is unreachable the release is queued until it answers.
func (d *Driver) ReleaseAddress(req *ipam.ReleaseAddressRequest) error {
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		if p, perr := netip.ParsePrefix(req.Address); perr == nil {
			addr = p.Addr()
		} else {
			return fmt.Errorf("address %q is not an IP address", req.Address)
		}
	}
	if addr.String() == GatewayV4 || addr.String() == GatewayV6 {
		return nil
	}
	ctx, cancel := d.ctx()
	defer cancel()
	// Docker forgets the address whatever we answer (it only logs a failed
	// release), so while etcd is unreachable the release waits for it.
	// Docker names the address only: free it only from a handle that
	// RequestAddress made, never a node's tunnel address, and not while an
	// endpoint still uses it. Docker deletes an endpoint before releasing
	// its address, so an endpoint found is another container's that took
	// the address since: the release is late (a repeat, after a restart).
	_, err = d.alloc.store.NowOrLater(ctx, func(ctx context.Context) error {
		return d.alloc.ReleaseIPIf(ctx, addr, func(h string) bool {
			return strings.HasPrefix(h, dockerHandlePrefix) && !d.endpointUses(ctx, h, addr)
		})
	})
	return err
}

// endpointUses reports whether an endpoint of the node holding handle uses
// addr. When etcd cannot say, it does: a release kept is collected later,
// a release done wrongly cuts a container off.
func (d *Driver) endpointUses(ctx context.Context, handle string, addr netip.Addr) bool {
	v := d.alloc.view
	// All of etcd up to now: an endpoint recorded a moment ago counts.
	if v != nil && v.CatchUp(ctx) != nil {
		return true
	}
	h, _, err := get[datastore.Handle](ctx, d.alloc, datastore.HandleKey(handle))
	if err != nil {
		return !errors.Is(err, datastore.ErrNotFound)
	}
	var eps []datastore.WorkloadEndpoint
	if v != nil {
		eps, err = datastore.ViewListUnchecked[datastore.WorkloadEndpoint](v, datastore.EndpointsOf(h.Node))
	}
	if v == nil || errors.Is(err, datastore.ErrNotHeld) {
		// Another host's endpoints: the view keeps only their keys.
		eps, err = datastore.ListAsUnchecked[datastore.WorkloadEndpoint](ctx, d.alloc.store, datastore.EndpointsOf(h.Node))
	}
	if err != nil {
		return true // unreadable: one of them may hold addr
	}
	for _, e := range eps {
		if slices.Contains(e.Addrs(), addr) {
			return true
		}
	}
	return false
}
