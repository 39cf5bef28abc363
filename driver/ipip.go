package driver

import (
	"context"
	"net/netip"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// SyncIPIP makes tunl0 match etcd: while a pool uses IPIP and this node has
// a tunnel address, tunl0 is up with it and carries `BLOCK via HOSTIP dev
// tunl0 onlink` for other nodes' blocks in IPIP pools (CrossSubnet: only
// nodes on another subnet); otherwise tabby's routes and address leave it.
func (d *Driver) SyncIPIP(ctx context.Context, pools []datastore.IPPool) error {
	nodes, err := datastore.ListAs[datastore.Node](ctx, d.store, datastore.NodesDir)
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
	keys, err := d.store.ListKeys(ctx, datastore.AffinitiesDir)
	if err != nil {
		return err
	}
	want := map[netip.Prefix]netip.Addr{}
	for _, k := range keys {
		parts := strings.Split(strings.TrimPrefix(k, datastore.AffinitiesDir), "/")
		if len(parts) != 2 || parts[0] == d.node {
			continue
		}
		block, err := netip.ParsePrefix(datastore.KeyToCIDR(parts[1]))
		theirs, ok := hosts[parts[0]]
		if err == nil && ok && tunnels(ipip, block, mine, theirs) {
			want[block] = theirs.Addr()
		}
	}
	return d.dp.SyncDeviceRoutes(idx, want)
}
