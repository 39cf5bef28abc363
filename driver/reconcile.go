package driver

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/hostlocal"
)

// Reconcile makes the kernel match etcd for this host: routes and proxy ARP
// for every joined endpoint whose interface exists, a blackhole for every
// block the host owns, and nothing else of tabby's (leaked interfaces and
// stale routes from a crash are removed). It runs before the plugin socket
// serves, so no request races it.
func (d *Driver) Reconcile(ctx context.Context) error {
	// Unchecked: a record that would not be used still keeps its
	// interface; only links that exist are acted on. From the view, once
	// it holds everything written before.
	if err := d.view.CatchUp(ctx); err != nil {
		return err
	}
	eps, err := datastore.ViewListUnchecked[datastore.WorkloadEndpoint](d.view, datastore.EndpointsOf(d.node))
	if err != nil {
		return err
	}
	d.adoptRecordedJoins(eps)
	joinedNow := d.local.All()
	wantIf := map[string][]netip.Addr{}
	var joined []datastore.WorkloadEndpoint
	recorded := map[string]bool{}
	for _, e := range eps {
		recorded[e.EndpointID] = true
		if _, ok := joinedNow[e.EndpointID]; !ok {
			continue
		}
		joined = append(joined, e)
		if addrs := e.Addrs(); len(addrs) > 0 {
			wantIf[e.Interface] = addrs
		}
	}
	for id := range joinedNow {
		if !recorded[id] { // its record went while tabby was down
			if err := d.local.Delete(id); err != nil {
				return err
			}
		}
	}
	links, err := d.dp.HostLinks()
	if err != nil {
		return err
	}
	for _, name := range links {
		ips, ok := wantIf[name]
		if !ok {
			d.log.Info("removing leaked interface", "ifname", name)
			if err := d.dp.DeleteLink(name); err != nil {
				return err
			}
			continue
		}
		if err := d.dp.RepairEndpoint(name, ips...); err != nil {
			return err
		}
	}
	if err := d.dp.Table().MarkSynced(dataplane.KindEndpoint); err != nil {
		return err
	}
	d.reopenPorts(ctx, joined)
	return d.SyncBlackholes(ctx)
}

// adoptRecordedJoins moves what versions before the host-local state wrote
// into endpoint records (sandbox key, gateway) into it, once: the record's
// fields are cleared by the endpoint's next Leave.
func (d *Driver) adoptRecordedJoins(eps []datastore.WorkloadEndpoint) {
	for _, e := range eps {
		if _, ok := d.local.Get(e.EndpointID); ok || e.SandboxKey == "" {
			continue
		}
		j := hostlocal.Joined{EndpointID: e.EndpointID, SandboxKey: e.SandboxKey, Gateway: e.Gateway, Subnet: e.Subnet}
		if err := d.local.Put(j); err != nil {
			d.log.Warn("joined endpoint of an older version not adopted", "endpoint", short(e.EndpointID), "err", err)
		}
	}
}

// SyncBlackholes claims a blackhole for each block this host has affinity
// for; the table removes those of blocks it no longer owns.
func (d *Driver) SyncBlackholes(ctx context.Context) error {
	if err := d.view.Wait(ctx, 0); err != nil {
		return err
	}
	var want []dataplane.Route
	for _, k := range d.view.Keys(datastore.AffinitiesOf(d.node)) {
		if p, err := netip.ParsePrefix(datastore.KeyToCIDR(k[strings.LastIndex(k, "/")+1:])); err == nil {
			want = append(want, dataplane.Route{Dst: p})
		}
	}
	return d.dp.Table().Sync(dataplane.KindBlackhole, want)
}

// RunBlackholes keeps blackholes current from changes to this host's
// affinities, with a periodic full resync for anything a watch missed.
func (d *Driver) RunBlackholes(ctx context.Context, resync time.Duration) {
	d.view.OnChange(ctx, []string{datastore.AffinitiesOf(d.node)}, resync, nil, func() {
		if err := d.SyncBlackholes(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("blackhole sync failed", "err", err)
		}
	})
}

// LocalEndpoints counts this host's endpoints in etcd.
func (d *Driver) LocalEndpoints(ctx context.Context) (int, error) {
	keys, err := d.store.ListKeys(ctx, datastore.EndpointsOf(d.node))
	return len(keys), err
}

// RemoveBlackholes deletes every blackhole tabby installed (uninstall).
func (d *Driver) RemoveBlackholes() error {
	return d.dp.Table().RemoveAll(dataplane.KindBlackhole)
}

// RemoveTunnelsAndRoutes deletes vxlan.tabby, wireguard.tabby (the key
// file stays: a reinstall keeps the host's identity), tabby's address and
// routes on tunl0, and the routes learned from peers (uninstall).
func (d *Driver) RemoveTunnelsAndRoutes() error {
	return errors.Join(d.dp.DeleteLink(dataplane.VXLANDevice), d.dp.ClearWireGuard(), d.dp.ClearIPIP(), d.dp.Table().RemoveAll(dataplane.KindLearned))
}
