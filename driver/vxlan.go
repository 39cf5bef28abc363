package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
)

// vxlanPool is a pool whose traffic between hosts is encapsulated.
type vxlanPool struct {
	cidr netip.Prefix
	mode string
}

func vxlanPools(pools []datastore.IPPool) []vxlanPool {
	var out []vxlanPool
	for _, p := range pools {
		pr, err := netip.ParsePrefix(p.CIDR)
		if err == nil && !p.Disabled && datastore.Encapsulated(p.VXLANMode) {
			out = append(out, vxlanPool{cidr: pr, mode: p.VXLANMode})
		}
	}
	return out
}

// tunnels reports whether traffic from a host on subnet mine to a block of
// a host on subnet theirs goes through VXLAN.
func tunnels(pools []vxlanPool, block, mine, theirs netip.Prefix) bool {
	for _, p := range pools {
		if !p.cidr.Contains(block.Addr()) {
			continue
		}
		return datastore.Tunnels(p.mode, mine, theirs.Addr())
	}
	return false
}

// vtepOf reads a node's tunnel endpoint; ok is false when it has none.
func vtepOf(n datastore.Node) (dataplane.VTEP, netip.Prefix, bool) {
	host, err1 := netip.ParsePrefix(n.IPv4)
	tun, err2 := netip.ParseAddr(n.VXLANTunnelAddress)
	mac, err3 := net.ParseMAC(n.VXLANTunnelMAC)
	if err1 != nil || err2 != nil || err3 != nil {
		return dataplane.VTEP{}, netip.Prefix{}, false
	}
	return dataplane.VTEP{HostIP: host.Addr(), TunnelIP: tun, MAC: mac}, host, true
}

// SyncVXLAN makes vxlan.tabby match etcd: present while a pool uses VXLAN
// and this node has a tunnel endpoint, with a permanent ARP and FDB entry
// for every other node's endpoint and `BLOCK via TUNNELIP dev vxlan.tabby
// onlink` for other nodes' blocks in VXLAN pools (CrossSubnet: only for
// nodes on another subnet; BGP routes the rest directly).
func (d *Driver) SyncVXLAN(ctx context.Context, pools []datastore.IPPool) error {
	nodes, err := fromView[datastore.Node](ctx, d, datastore.NodesDir)
	if err != nil {
		return err
	}
	vx := vxlanPools(pools)
	var self dataplane.VTEP
	var mine netip.Prefix
	ok := false
	byName := map[string]datastore.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
		if n.Name == d.node {
			self, mine, ok = vtepOf(n)
		}
	}
	if len(vx) == 0 || !ok {
		return errors.Join(d.dp.Table().Sync(dataplane.KindVXLAN, nil), d.dp.DeleteLink(dataplane.VXLANDevice))
	}
	return d.programVXLAN(ctx, self, mine, vx, nodes, byName)
}

// programVXLAN builds vxlan.tabby, its peers and its routes.
func (d *Driver) programVXLAN(ctx context.Context, self dataplane.VTEP, mine netip.Prefix, vx []vxlanPool,
	nodes []datastore.Node, byName map[string]datastore.Node) error {
	mtu := 0
	if d.hostMTU > 0 {
		mtu = d.hostMTU - vxlanOverhead
	}
	idx, err := d.dp.EnsureVXLAN(self, mtu)
	if err != nil {
		return err
	}
	var peers []dataplane.VTEP
	for _, n := range nodes {
		if v, _, ok := vtepOf(n); ok && n.Name != d.node {
			peers = append(peers, v)
		}
	}
	if err := d.dp.SyncVXLANPeers(idx, peers); err != nil {
		return err
	}
	want, err := d.tunnelledBlocks(ctx, vx, mine, func(node string) (netip.Addr, netip.Prefix, bool) {
		v, host, ok := vtepOf(byName[node])
		return v.TunnelIP, host, ok
	})
	if err != nil {
		return err
	}
	return d.dp.Table().Sync(dataplane.KindVXLAN, deviceRoutes(idx, want))
}

// deviceRoutes are the table's claims for blocks carried by one tunnel.
func deviceRoutes(link int, want map[netip.Prefix]netip.Addr) []dataplane.Route {
	out := make([]dataplane.Route, 0, len(want))
	for dst, gw := range want {
		out = append(out, dataplane.Route{Dst: dst, Gw: gw, Link: link})
	}
	return out
}

// tunnelledBlocks maps every other node's block that a tunnel carries (its
// pool tunnels, Always or across subnets) to the gateway gw gives for its
// node; nodes gw knows nothing of are left out.
func (d *Driver) tunnelledBlocks(ctx context.Context, pools []vxlanPool, mine netip.Prefix,
	gw func(node string) (netip.Addr, netip.Prefix, bool)) (map[netip.Prefix]netip.Addr, error) {
	if err := d.view.Wait(ctx, 0); err != nil {
		return nil, err
	}
	want := map[netip.Prefix]netip.Addr{}
	for node, blocks := range d.affineBlocks() {
		if node == d.node {
			continue
		}
		addr, theirs, ok := gw(node)
		for _, block := range blocks {
			if ok && tunnels(pools, block, mine, theirs) {
				want[block] = addr
			}
		}
	}
	return want, nil
}

// affineBlocks reads each node's blocks from the affinities in the view.
func (d *Driver) affineBlocks() map[string][]netip.Prefix {
	byNode := map[string][]netip.Prefix{}
	for _, k := range d.view.Keys(datastore.AffinitiesDir) {
		parts := strings.Split(strings.TrimPrefix(k, datastore.AffinitiesDir), "/")
		if len(parts) != 2 {
			continue
		}
		if b, err := netip.ParsePrefix(datastore.KeyToCIDR(parts[1])); err == nil {
			byNode[parts[0]] = append(byNode[parts[0]], b)
		}
	}
	return byNode
}

// RunTunnels keeps wireguard.tabby, vxlan.tabby and tunl0 current as
// pools, nodes, blocks and FelixConfigurations change. While no pool
// tunnels and WireGuard is off, one read of the pools and settings is all a
// change costs (every host wakes up for every block claimed in the cluster).
func (d *Driver) RunTunnels(ctx context.Context, resync time.Duration) {
	clean, wgClean, wgLast := false, false, "<nil>"
	dirs := []string{datastore.PoolsDir, datastore.NodesDir, datastore.AffinitiesDir, datastore.FelixConfigDir}
	d.view.OnChange(ctx, dirs, resync, nil, func() {
		if on := d.wireGuardOn(ctx); on || !wgClean {
			err := d.SyncWireGuard(ctx)
			// Said once per cause: a host without the module would repeat
			// it on every resync.
			if msg := fmt.Sprint(err); err != nil && ctx.Err() == nil && msg != wgLast {
				d.log.Warn("wireguard sync failed", "err", err)
			}
			wgLast = fmt.Sprint(err)
			if err == nil {
				wgClean = !on
			}
		}
		pools, err := fromView[datastore.IPPool](ctx, d, datastore.PoolsDir)
		tunnelled := false
		for _, p := range pools {
			tunnelled = tunnelled || (!p.Disabled && (datastore.Encapsulated(p.VXLANMode) || datastore.Encapsulated(p.IPIPMode)))
		}
		if err == nil && (tunnelled || !clean) {
			errV, errI := d.SyncVXLAN(ctx, pools), d.SyncIPIP(ctx, pools)
			if err = errors.Join(errV, errI); err == nil {
				clean = !tunnelled
			}
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("tunnel sync failed", "err", err)
		}
	})
}
