package driver

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
)

// Encapsulation overhead of a pool's mode, taken off the host MTU.
const (
	ipipOverhead  = 20
	vxlanOverhead = 50
)

// NATSyncer programs outgoing NAT for the pools (the host's iptables).
type NATSyncer interface {
	SyncNAT(pools []dataplane.NATPool) error
}

// SyncNAT makes outgoing NAT match the pools in etcd.
func (d *Driver) SyncNAT(ctx context.Context, n NATSyncer) error {
	pools, err := fromView[datastore.IPPool](ctx, d, datastore.PoolsDir)
	if err != nil {
		return err
	}
	var np []dataplane.NATPool
	for _, p := range pools {
		if pr, err := netip.ParsePrefix(p.CIDR); err == nil {
			np = append(np, dataplane.NATPool{CIDR: pr, NAT: p.NATOutgoing && !p.Disabled})
		}
	}
	return n.SyncNAT(np)
}

// RunNAT keeps outgoing NAT current as pools change, with a periodic resync.
func (d *Driver) RunNAT(ctx context.Context, n NATSyncer, resync time.Duration) {
	d.view.OnChange(ctx, []string{datastore.PoolsDir}, resync, nil, func() {
		if err := d.SyncNAT(ctx, n); err != nil && ctx.Err() == nil {
			d.log.Warn("outgoing NAT sync failed", "err", err)
		}
	})
}

// SetHostMTU records the MTU of the host interface that carries traffic to
// other hosts; container MTUs derive from it.
func (d *Driver) SetHostMTU(mtu int) { d.hostMTU = mtu }

// mtuFor is the container MTU for an address: the host's MTU less the
// encapsulation overhead of the address's pool (0: leave the default).
func (d *Driver) mtuFor(ctx context.Context, ip netip.Addr) int {
	if d.hostMTU == 0 {
		return 0
	}
	pools, err := fromView[datastore.IPPool](ctx, d, datastore.PoolsDir)
	if err != nil {
		return 0
	}
	mtu := d.hostMTU
	for _, p := range pools {
		pr, err := netip.ParsePrefix(p.CIDR)
		if err != nil || !pr.Contains(ip) {
			continue
		}
		switch {
		case p.VXLANMode != "" && p.VXLANMode != datastore.ModeNever:
			mtu = d.hostMTU - vxlanOverhead
		case p.IPIPMode != "" && p.IPIPMode != datastore.ModeNever:
			mtu = d.hostMTU - ipipOverhead
		}
		break
	}
	// WireGuard carries this host's traffic to encrypting hosts instead of
	// any encapsulation, with a larger header.
	if d.wireGuardOn(ctx) && d.WireGuardError() == nil {
		self, _ := recordOf[datastore.Node](ctx, d, datastore.NodeKey(d.node))
		mtu = min(mtu, d.hostMTU-wgOverhead(self))
	}
	return mtu
}

// poolRoutes are an --internal endpoint's routes: every enabled pool of the
// families it has, via its gateways, in place of a default route.
func (d *Driver) poolRoutes(ctx context.Context, gw string, v4, v6 bool) ([]*network.StaticRoute, error) {
	pools, err := fromView[datastore.IPPool](ctx, d, datastore.PoolsDir)
	if err != nil {
		return nil, fmt.Errorf("routes of an internal network: %w", err)
	}
	var out []*network.StaticRoute
	for _, p := range pools {
		pp, err := netip.ParsePrefix(p.CIDR)
		if err != nil || p.Disabled {
			continue
		}
		switch {
		case pp.Addr().Is4() && v4:
			out = append(out, &network.StaticRoute{Destination: pp.String(), RouteType: routeNextHop, NextHop: gw})
		case pp.Addr().Is6() && v6:
			out = append(out, &network.StaticRoute{Destination: pp.String(), RouteType: routeNextHop, NextHop: dataplane.GatewayV6.Addr().String()})
		}
	}
	return out, nil
}
