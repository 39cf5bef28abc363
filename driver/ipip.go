package driver

import (
	"context"
	"net/netip"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
)

// SyncIPIP makes tunl0 match etcd: while a pool uses IPIP and this node has
// a tunnel address, tunl0 is up with it and carries `BLOCK via HOSTIP dev
// tunl0 onlink` for other nodes' blocks in IPIP pools (CrossSubnet: only
// nodes on another subnet); otherwise tabby's routes and address leave it.
func (d *Driver) SyncIPIP(ctx context.Context, pools []datastore.IPPool) error {
	nodes, err := fromView[datastore.Node](ctx, d, datastore.NodesDir)
	if err != nil {
		return err
	}
	var ipip []vxlanPool
	for _, p := range pools {
		if pr, err := netip.ParsePrefix(p.CIDR); err == nil && !p.Disabled && datastore.Encapsulated(p.IPIPMode) {
			ipip = append(ipip, vxlanPool{cidr: pr, mode: p.IPIPMode})
		}
	}
	hosts := map[string]netip.Prefix{}
	var tunnelIP netip.Addr
	for _, n := range nodes {
		if h, err := netip.ParsePrefix(n.IPv4); err == nil {
			hosts[n.Name] = h
		}
		if n.Name == d.node {
			tunnelIP, _ = netip.ParseAddr(n.IPIPTunnelAddress)
		}
	}
	mine, ok := hosts[d.node]
	if len(ipip) == 0 || !tunnelIP.IsValid() || !ok {
		return d.dp.ClearIPIP()
	}
	mtu := 0
	if d.hostMTU > 0 {
		mtu = d.hostMTU - ipipOverhead
	}
	idx, err := d.dp.EnsureIPIP(tunnelIP, mtu)
	if err != nil {
		return err
	}
	want, err := d.tunnelledBlocks(ctx, ipip, mine, func(node string) (netip.Addr, netip.Prefix, bool) {
		h, ok := hosts[node]
		return h.Addr(), h, ok
	})
	if err != nil {
		return err
	}
	return d.dp.Table().Sync(dataplane.KindIPIP, deviceRoutes(idx, want))
}
