package plugin

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
)

// tunnelHandle owns a node's VXLAN tunnel address in IPAM.
func tunnelHandle(node string) string { return "vxlan-tunnel-addr-" + node }

// tunnelMAC is a node's VTEP MAC: locally administered, stable per node.
func tunnelMAC(node string) string {
	h := fnv.New64a()
	h.Write([]byte(node))
	s := h.Sum64()
	return fmt.Sprintf("66:%02x:%02x:%02x:%02x:%02x", byte(s>>32), byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}

// keepTunnel gives this node a VXLAN tunnel endpoint while a pool uses VXLAN
// and takes it back when none does.
func keepTunnel(ctx context.Context, st *datastore.Store, alloc *ipamdriver.Allocator, node string, log *slog.Logger) {
	kick := make(chan struct{}, 1)
	go st.Notify(ctx, datastore.PoolsDir, kick)
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		if err := ensureTunnel(ctx, st, alloc, node); err != nil && ctx.Err() == nil {
			log.Warn("VXLAN tunnel address", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick.C:
		}
	}
}

func ensureTunnel(ctx context.Context, st *datastore.Store, alloc *ipamdriver.Allocator, node string) error {
	pools, err := datastore.ListAs[datastore.IPPool](ctx, st, datastore.PoolsDir)
	if err != nil {
		return err
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	var vx []netip.Prefix
	for _, p := range pools {
		if pr, err := netip.ParsePrefix(p.CIDR); err == nil && !p.Disabled && p.VXLANMode != "" && p.VXLANMode != datastore.ModeNever {
			vx = append(vx, pr)
		}
	}
	var n datastore.Node
	if _, err := st.Get(ctx, datastore.NodeKey(node), &n); err != nil {
		return err
	}
	have, _ := netip.ParseAddr(n.VXLANTunnelAddress)
	for _, p := range vx {
		if have.IsValid() && p.Contains(have) {
			return nil
		}
	}
	if have.IsValid() || len(vx) == 0 {
		// No VXLAN pool holds the address (any more): give it back.
		if err := alloc.ReleaseHandle(ctx, tunnelHandle(node)); err != nil {
			return err
		}
		if err := setTunnel(ctx, st, node, "", ""); err != nil || len(vx) == 0 {
			return err
		}
	}
	ip, err := alloc.AutoAssign(ctx, vx[0], tunnelHandle(node))
	if err != nil {
		return fmt.Errorf("tunnel address in %s: %w", vx[0], err)
	}
	if err := setTunnel(ctx, st, node, ip.String(), tunnelMAC(node)); err != nil {
		return errors.Join(err, alloc.ReleaseHandle(ctx, tunnelHandle(node)))
	}
	return nil
}

func setTunnel(ctx context.Context, st *datastore.Store, node, addr, mac string) error {
	return datastore.Update(ctx, st, datastore.NodeKey(node), func(n *datastore.Node, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		n.VXLANTunnelAddress, n.VXLANTunnelMAC = addr, mac
		return nil
	})
}
