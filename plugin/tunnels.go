package plugin

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
)

// tunnel is one kind of tunnel endpoint a node may need.
type tunnel struct {
	name string // "vxlan", "ipip" or "wireguard"
	// wants says whether the tunnel needs an address from pool p; wg is
	// whether this node encrypts.
	wants  func(p datastore.IPPool, wg bool) bool
	addr   func(*datastore.Node) *string
	hasMAC bool
}

var tunnels = []tunnel{
	{name: "vxlan", wants: func(p datastore.IPPool, _ bool) bool { return datastore.Encapsulated(p.VXLANMode) },
		addr: func(n *datastore.Node) *string { return &n.VXLANTunnelAddress }, hasMAC: true},
	{name: "ipip", wants: func(p datastore.IPPool, _ bool) bool { return datastore.Encapsulated(p.IPIPMode) },
		addr: func(n *datastore.Node) *string { return &n.IPIPTunnelAddress }},
	// wireguard.tabby's address, from any IPv4 pool, as Calico's.
	{name: "wireguard", wants: func(p datastore.IPPool, wg bool) bool {
		pr, err := netip.ParsePrefix(p.CIDR)
		return wg && err == nil && pr.Addr().Is4()
	}, addr: func(n *datastore.Node) *string { return &n.WireguardInterfaceAddr }},
}

// handle owns a node's tunnel address in IPAM.
func (k tunnel) handle(node string) string { return k.name + "-tunnel-addr-" + node }

// tunnelMAC is a node's VTEP MAC: locally administered, stable per node.
func tunnelMAC(node string) string {
	h := fnv.New64a()
	h.Write([]byte(node))
	s := h.Sum64()
	return fmt.Sprintf("66:%02x:%02x:%02x:%02x:%02x", byte(s>>32), byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

// keepTunnel gives this node a tunnel address for each encapsulation a pool
// uses (VXLAN, IPIP) and for WireGuard while the node encrypts, and takes
// it back when none needs it.
// wgActive tells whether this node encrypts (its setting, and a kernel
// that can).
func keepTunnel(ctx context.Context, st *datastore.Store, view *datastore.View, alloc *ipamdriver.Allocator, node string,
	wgActive func(context.Context) bool, log *slog.Logger) {
	view.OnChange(ctx, []string{datastore.PoolsDir, datastore.FelixConfigDir}, 30*time.Second, nil, func() {
		pools := datastore.ViewList[datastore.IPPool](view, datastore.PoolsDir)
		wg := wgActive(ctx)
		for _, k := range tunnels {
			if err := k.ensure(ctx, st, pools, wg, alloc, node); err != nil && ctx.Err() == nil {
				log.Warn("tunnel address", "tunnel", k.name, "err", err)
			}
		}
	})
}

func (k tunnel) ensure(ctx context.Context, st *datastore.Store, pools []datastore.IPPool, wg bool, alloc *ipamdriver.Allocator, node string) error {
	pools = slices.Clone(pools) // the view's, sorted here
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	var vx []netip.Prefix
	for _, p := range pools {
		if pr, err := netip.ParsePrefix(p.CIDR); err == nil && !p.Disabled && k.wants(p, wg) {
			vx = append(vx, pr)
		}
	}
	var n datastore.Node
	if _, err := st.Get(ctx, datastore.NodeKey(node), &n); err != nil {
		return err
	}
	have, _ := netip.ParseAddr(*k.addr(&n))
	for _, p := range vx {
		if have.IsValid() && p.Contains(have) {
			return nil
		}
	}
	if have.IsValid() || len(vx) == 0 {
		// No VXLAN pool holds the address (any more): give it back.
		if err := alloc.ReleaseHandle(ctx, k.handle(node)); err != nil {
			return err
		}
		if err := k.set(ctx, st, node, ""); err != nil || len(vx) == 0 {
			return err
		}
	}
	ip, err := alloc.AutoAssign(ctx, vx[0], k.handle(node))
	if err != nil {
		return fmt.Errorf("%s tunnel address in %s: %w", k.name, vx[0], err)
	}
	if err := k.set(ctx, st, node, ip.String()); err != nil {
		return errors.Join(err, alloc.ReleaseHandle(ctx, k.handle(node)))
	}
	return nil
}

// set records (or, with "", clears) the node's tunnel address.
func (k tunnel) set(ctx context.Context, st *datastore.Store, node, addr string) error {
	return datastore.Update(ctx, st, datastore.NodeKey(node), func(n *datastore.Node, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		*k.addr(n) = addr
		if k.hasMAC {
			n.VXLANTunnelMAC = ""
			if addr != "" {
				n.VXLANTunnelMAC = tunnelMAC(node)
			}
		}
		return nil
	})
}
