// Package driver is tabby's Docker NetworkDriver: Calico-style L3 endpoints,
// each container interface a /32 on a veth whose host side answers ARP for the
// gateway 169.254.1.1 by proxy ARP, with a host route per address. Networks and
// endpoints are recorded in etcd; the kernel work is in driver/dataplane.
package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/hostlocal"
	"github.com/tabbynet/tabby/driver/policy"
	"github.com/tabbynet/tabby/driver/ports"
)

const (
	// ContainerMAC is every container interface's MAC: only L3 matters.
	ContainerMAC = "ee:ee:ee:ee:ee:ee"
	// ContainerIfPrefix makes Docker name the container side cali0, cali1...
	ContainerIfPrefix = "cali"
	// LabelNetwork is the endpoint label that carries the network's name.
	LabelNetwork = "tabby.network"

	optGeneric = "com.docker.network.generic"
	// optInternal is set on networks made with --internal.
	optInternal = "com.docker.network.internal"
	optMTU      = "com.docker.network.driver.mtu"
	// optOrigin marks a network tabby mirrored from another host.
	optOrigin = "tabby.origin"
	// optPublish says where the network's published ports answer: on the
	// container's host (host, the default) or on every tabby host
	// (everywhere).
	optPublish = "tabby.publish"
	// routeNextHop and routeConnected are libnetwork's RouteTypes for a
	// route via a gateway and an on-link route.
	routeNextHop   = 0
	routeConnected = 1
)

// Driver serves Docker's NetworkDriver API for one node.
type Driver struct {
	store *datastore.Store
	// view is the daemon's copy of the cluster: loops and handlers read
	// the records from it; only writes (and startup) go to etcd.
	view *datastore.View
	// local holds where this host's endpoints joined (host-local facts);
	// localKick wakes the policy sync when it changes.
	local     *hostlocal.Store
	localKick chan struct{}
	// staleProfiles is since when each profile of no network has been
	// seen so (RunNames' alone).
	staleProfiles map[string]time.Time
	node          string
	dp            *dataplane.Dataplane
	log           *slog.Logger
	timeout       time.Duration
	// joining serialises gateway choice among endpoints of one sandbox;
	// joins into different sandboxes run side by side.
	joining sandboxLocks
	// hostMTU is the MTU of the host's uplink (0: unknown).
	hostMTU int
	// wgKeyFile holds this host's WireGuard private key; wg what the
	// WireGuard loop last found.
	wgKeyFile string
	wg        wgState
	// hostAccess is what containers may reach on this host (policy input).
	hostAccess policy.HostAccess
	// pol is the policy loop's state between runs.
	pol *policyState
	// sandboxPaths lists where a sandbox key may be opened from here.
	sandboxPaths func(key string) []string
	// ports holds this host's published ports.
	ports *ports.Proxy
	// testHookAfterSetup, set only by tests, runs between creating the veth
	// and recording the join, to prove the undo path.
	testHookAfterSetup func()
}

var _ network.Driver = (*Driver)(nil)

// New returns the driver of node, programming the kernel through dp.
func New(store *datastore.Store, view *datastore.View, local *hostlocal.Store, node string, dp *dataplane.Dataplane, log *slog.Logger) *Driver {
	return &Driver{store: store, view: view, local: local, localKick: make(chan struct{}, 1), node: node, dp: dp, log: log, timeout: 30 * time.Second, ports: ports.New(log), pol: newPolicyState(node),
		sandboxPaths: func(key string) []string { return []string{key} }}
}

// SetHostAccess sets what this host's containers may reach on the host
// itself; the next policy sync applies it.
func (d *Driver) SetHostAccess(h policy.HostAccess) { d.hostAccess = h }

// SetSandboxPaths tells the driver where Docker's sandbox keys can be opened
// when dockerd's mount namespace is not the daemon's (a managed plugin, or
// dockerd in a namespace of its own): f returns the paths to try for a key.
func (d *Driver) SetSandboxPaths(f func(key string) []string) { d.sandboxPaths = f }

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// localChanged wakes the policy sync after a join or leave on this host.
func (d *Driver) localChanged() {
	select {
	case d.localKick <- struct{}{}:
	default:
	}
}

// fromView returns the valid records under prefix from the cluster view,
// once it holds a first listing.
func fromView[T any](ctx context.Context, d *Driver, prefix string) ([]T, error) {
	if err := d.view.Wait(ctx, 0); err != nil {
		return nil, err
	}
	return datastore.ViewList[T](d.view, prefix), nil
}

// recordOf reads one record from the view, or from etcd while the view
// does not hold it yet (this host wrote it a few milliseconds ago). What it
// returns may be shared with the view: never modify it.
func recordOf[T any](ctx context.Context, d *Driver, key string) (T, error) {
	if err := d.view.Wait(ctx, 0); err == nil {
		if v, _, ok := datastore.ViewGet[T](d.view, key); ok {
			return v, nil
		}
	}
	var v T
	_, err := d.store.Get(ctx, key, &v)
	return v, err
}

// GetCapabilities: scope local, since Docker refuses global without swarm;
// tabby makes networks cluster-wide itself.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.GlobalScope}, nil
}

// netOptions are the -o options of a network, parsed.
type netOptions struct {
	opts       map[string]string // what other hosts repeat when mirroring it
	mtu        int
	origin     string
	everywhere bool
}

// parseOptions accepts the -o options tabby knows and rejects the rest.
func parseOptions(opts map[string]interface{}) (netOptions, error) {
	out := netOptions{opts: map[string]string{}}
	generic, _ := opts[optGeneric].(map[string]interface{})
	for k, v := range generic {
		s := fmt.Sprint(v)
		switch k {
		case optMTU:
			n, err := strconv.Atoi(s)
			if err != nil || n < 68 || n > 65535 {
				return out, fmt.Errorf("option %s=%q must be a number from 68 to 65535", k, s)
			}
			out.mtu = n
			out.opts[k] = s
		case optOrigin:
			out.origin = s
		case optPublish:
			if s != "host" && s != "everywhere" {
				return out, fmt.Errorf("option %s=%q must be host or everywhere", k, s)
			}
			out.everywhere = s == "everywhere"
			out.opts[k] = s
		default:
			return out, fmt.Errorf("unknown option %q: tabby accepts -o %s=N and -o %s=host|everywhere; remove -o %s", k, optMTU, optPublish, k)
		}
	}
	return out, nil
}

// CreateNetwork records the network and its profile.
func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	o, err := parseOptions(req.Options)
	if err != nil {
		return err
	}
	if len(req.IPv6Data) > 1 || (len(req.IPv6Data) == 1 && req.IPv6Data[0] == nil) {
		return fmt.Errorf("tabby networks take at most one IPv6 subnet, got %d", len(req.IPv6Data))
	}
	// IPv6-only networks (Docker 28+, --ipv4=false --ipv6) bring no IPv4 data.
	v6only := len(req.IPv4Data) == 0 && len(req.IPv6Data) == 1
	if !v6only && (len(req.IPv4Data) != 1 || req.IPv4Data[0] == nil) {
		return fmt.Errorf("tabby networks take exactly one IPv4 subnet, got %d (or, IPv6-only, --ipv4=false --ipv6)", len(req.IPv4Data))
	}
	ctx, cancel := d.ctx()
	defer cancel()
	internal, _ := req.Options[optInternal].(bool)
	n := datastore.Network{ID: req.NetworkID, MTU: o.mtu, Options: o.opts, Profile: req.NetworkID,
		Node: d.node, Origin: o.origin, NoIPv4: v6only, Internal: internal, PublishEverywhere: o.everywhere}
	pool := ""
	if !v6only {
		pool = req.IPv4Data[0].Pool
		n.Pool = pool
	}
	if pool != "" && pool != "0.0.0.0/0" {
		if err := d.checkTabbyPool(ctx, pool); err != nil {
			return err
		}
		n.Subnet = pool
	}
	if len(req.IPv6Data) == 1 {
		n.IPv6 = true
		if p6 := req.IPv6Data[0].Pool; p6 != "::/0" {
			if err := d.checkTabbyPool(ctx, p6); err != nil {
				return err
			}
			n.Subnet6 = p6
		}
	}
	for _, data := range append(req.IPv4Data, req.IPv6Data...) {
		n.AuxAddresses = append(n.AuxAddresses, auxAddresses(data.AuxAddresses)...)
	}
	prof := networkProfile(req.NetworkID, req.NetworkID)
	err = d.store.Commit(ctx,
		datastore.Op{Key: datastore.NetworkKey(n.ID), Value: &n, Rev: datastore.Any},
		datastore.Op{Key: datastore.ProfileKey(prof.Name), Value: &prof, Rev: datastore.Any})
	if err != nil {
		return fmt.Errorf("store network %s: %w", short(n.ID), err)
	}
	d.log.Info("network created", "network", short(n.ID), "pool", pool)
	return nil
}

// auxAddresses returns the addresses of --aux-address reservations, which
// Docker sends as CIDRs ("10.0.0.5/24"), sorted.
func auxAddresses(aux map[string]interface{}) []string {
	var out []string
	for _, v := range aux {
		s, _ := v.(string)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr().String())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.String())
		}
	}
	sort.Strings(out)
	return out
}

// checkTabbyPool refuses subnets that did not come from tabby's IPAM.
func (d *Driver) checkTabbyPool(ctx context.Context, subnet string) error {
	sp, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("subnet %q is not a CIDR", subnet)
	}
	pools, err := fromView[datastore.IPPool](ctx, d, datastore.PoolsDir)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil && pp.Bits() <= sp.Bits() && pp.Contains(sp.Addr()) {
			return nil
		}
	}
	return fmt.Errorf("subnet %s is in no tabby IP pool: tabby networks need --ipam-driver tabby", subnet)
}

// DeleteNetwork removes the network and its profile; a missing one is fine.
func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	ctx, cancel := d.ctx()
	defer cancel()
	n, err := recordOf[datastore.Network](ctx, d, datastore.NetworkKey(req.NetworkID))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	rev, err := d.store.CommitRev(ctx, datastore.Op{Key: datastore.NetworkKey(n.ID), Rev: datastore.Any},
		datastore.Op{Key: datastore.ProfileKey(n.ID), Rev: datastore.Any})
	if err != nil {
		return fmt.Errorf("delete network %s: %w", short(n.ID), err)
	}
	// The profile is named after the network, which other hosts mirror under
	// the same name: it goes with the last of them. Looking only after our
	// own record is gone means that of concurrent deletes the last one sees
	// no other and removes it.
	if n.Profile != n.ID && !d.nameInUse(ctx, n.Profile, n.ID, rev) {
		if err := d.store.Delete(ctx, datastore.ProfileKey(n.Profile)); err != nil {
			return fmt.Errorf("delete profile %s: %w", n.Profile, err)
		}
	}
	d.log.Info("network deleted", "network", short(n.ID))
	return nil
}

// nameInUse reports whether a network other than id carries name, as of
// revision rev or later.
func (d *Driver) nameInUse(ctx context.Context, name, id string, rev int64) bool {
	if err := d.view.Wait(ctx, rev); err != nil {
		return true // keep the profile when in doubt
	}
	nets := datastore.ViewList[datastore.Network](d.view, datastore.NetworksDir)
	for _, o := range nets {
		if o.ID != id && o.Name == name {
			return true
		}
	}
	return false
}

// CreateEndpoint records the endpoint; the veth is made at Join.
func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if req.Interface == nil || (req.Interface.Address == "" && req.Interface.AddressIPv6 == "") {
		return nil, errors.New("endpoint has no address: tabby networks need --ipam-driver tabby")
	}
	var ip4, ip6 netip.Addr
	if req.Interface.Address != "" {
		pfx, err := netip.ParsePrefix(req.Interface.Address)
		if err != nil || !pfx.Addr().Is4() {
			return nil, fmt.Errorf("endpoint address %q is not an IPv4 CIDR", req.Interface.Address)
		}
		ip4 = pfx.Addr()
	}
	if req.Interface.AddressIPv6 != "" {
		p6, err := netip.ParsePrefix(req.Interface.AddressIPv6)
		if err != nil || !p6.Addr().Is6() {
			return nil, fmt.Errorf("endpoint address %q is not an IPv6 CIDR", req.Interface.AddressIPv6)
		}
		ip6 = p6.Addr()
	}
	ctx, cancel := d.ctx()
	defer cancel()
	n, err := recordOf[datastore.Network](ctx, d, datastore.NetworkKey(req.NetworkID))
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", short(req.NetworkID), err)
	}
	if !ip4.IsValid() && !n.NoIPv4 {
		return nil, errors.New("endpoint has no IPv4 address: tabby networks need --ipam-driver tabby")
	}
	resp := &network.CreateEndpointResponse{}
	mac := req.Interface.MacAddress
	if mac == "" {
		mac = ContainerMAC
		resp.Interface = &network.EndpointInterface{MacAddress: mac}
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = d.mtuFor(ctx, cmp.Or(ip4, ip6))
	}
	ep := datastore.WorkloadEndpoint{
		Node: d.node, EndpointID: req.EndpointID, NetworkID: n.ID,
		Interface: dataplane.HostIfName(req.EndpointID), IPv4: addrString(ip4), IPv6: addrString(ip6), MAC: mac, MTU: mtu,
		Subnet: n.Subnet, Profiles: []string{n.Profile}, Labels: map[string]string{LabelNetwork: networkLabel(n)},
		Internal: n.Internal, PublishEverywhere: n.PublishEverywhere,
	}
	if err := d.store.Put(ctx, datastore.EndpointKey(d.node, ep.EndpointID), &ep); err != nil {
		return nil, fmt.Errorf("store endpoint %s: %w", short(ep.EndpointID), err)
	}
	d.log.Info("endpoint created", "network", short(n.ID), "endpoint", short(ep.EndpointID), "ip", ep.IPv4, "ip6", ep.IPv6)
	return resp, nil
}

// addrString is a's text, or "" for no address.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func networkLabel(n datastore.Network) string {
	if n.Name != "" {
		return n.Name
	}
	return n.ID
}

// DeleteEndpoint removes the endpoint's interface (if Leave did not) and
// its record; a missing endpoint is fine.
func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	d.ports.Close(req.EndpointID)
	if err := d.dp.DeleteLink(dataplane.HostIfName(req.EndpointID)); err != nil {
		return err
	}
	if _, joined := d.local.Get(req.EndpointID); joined { // a DeleteEndpoint without Leave
		if err := d.local.Delete(req.EndpointID); err != nil {
			return err
		}
		d.localChanged()
	}
	ctx, cancel := d.ctx()
	defer cancel()
	key := datastore.EndpointKey(d.node, req.EndpointID)
	// Failing while etcd is unreachable would leave Docker holding a stale
	// endpoint (and its address) until dockerd restarts, though the
	// container and its interface are gone; the record waits for etcd.
	queued, err := d.store.NowOrLater(ctx, func(ctx context.Context) error { return d.store.Delete(ctx, key) })
	if queued {
		d.log.Warn("endpoint deleted; its record goes when etcd answers", "network", short(req.NetworkID), "endpoint", short(req.EndpointID))
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete endpoint %s: %w", short(req.EndpointID), err)
	}
	d.log.Info("endpoint deleted", "network", short(req.NetworkID), "endpoint", short(req.EndpointID))
	return nil
}

// EndpointInfo reports the endpoint's interface and address.
func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	ep, err := recordOf[datastore.WorkloadEndpoint](ctx, d, datastore.EndpointKey(d.node, req.EndpointID))
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", short(req.EndpointID), err)
	}
	v := map[string]string{"ifname": ep.Interface, "ip": ep.IPv4, "mac": ep.MAC}
	if ep.IPv6 != "" {
		v["ip6"] = ep.IPv6
	}
	return &network.InfoResponse{Value: v}, nil
}

// Join creates the veth pair and tells Docker how to set up the container
// side: cali0 with default via 169.254.1.N, reached over an on-link route,
// and for IPv6 default via fe80::1, the host side's link-local address.
func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	defer d.joining.lock(req.SandboxKey)()
	ctx, cancel := d.ctx() // after the lock: waiting for it is not the store's time
	defer cancel()
	ep, err := recordOf[datastore.WorkloadEndpoint](ctx, d, datastore.EndpointKey(d.node, req.EndpointID))
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", short(req.EndpointID), err)
	}
	peers := d.sandboxPeers(req.SandboxKey, ep.EndpointID)
	gw, err := pickGateway(peers)
	if err != nil {
		return nil, err
	}
	ip4, _ := netip.ParseAddr(ep.IPv4) // invalid on an IPv6-only network
	spec := dataplane.Endpoint{HostIf: ep.Interface, TempIf: dataplane.TempIfName(ep.EndpointID), IPv4: ip4, MTU: ep.MTU}
	resp := &network.JoinResponse{
		InterfaceName:         network.InterfaceName{SrcName: spec.TempIf, DstPrefix: ContainerIfPrefix},
		DisableGatewayService: true,
	}
	if ip4.IsValid() {
		resp.Gateway = gw
		resp.StaticRoutes = []*network.StaticRoute{{Destination: gw + "/32", RouteType: routeConnected}}
	}
	var internal []*network.StaticRoute
	if ep.Internal {
		// No default route: the cluster's pools only, via the gateway.
		if internal, err = d.poolRoutes(ctx, gw, ip4.IsValid(), ep.IPv6 != ""); err != nil {
			return nil, err
		}
		resp.Gateway = ""
	}
	// A network with its own --subnet is routed by its own interface, so a
	// container on several networks starts connections to each one's peers
	// from its address there (a peer's profile admits only its network's
	// addresses). Networks drawing from a whole pool share it: no route can
	// tell them apart, and they go by the default route.
	if ep.Subnet != "" {
		resp.StaticRoutes = append(resp.StaticRoutes, &network.StaticRoute{Destination: ep.Subnet, RouteType: routeNextHop, NextHop: gw})
	}
	if ep.IPv6 != "" {
		// Link-local, so no on-link route is needed: the kernel routes
		// fe80::/64 to every interface, and libnetwork finds cali0 by it.
		spec.IPv6 = netip.MustParseAddr(ep.IPv6)
		resp.GatewayIPv6 = dataplane.GatewayV6.Addr().String()
		if ep.Internal {
			resp.GatewayIPv6 = ""
		}
	}
	resp.StaticRoutes = append(resp.StaticRoutes, internal...)
	if err := d.dp.SetupEndpoint(spec); err != nil {
		return nil, err
	}
	if err := d.setAsideCovering(req.SandboxKey, peers, spec.IPv4); err != nil {
		_ = d.dp.DeleteLink(spec.HostIf)
		return nil, err
	}
	if d.testHookAfterSetup != nil {
		d.testHookAfterSetup()
	}
	// Where the endpoint joined is this host's business: recorded here,
	// not in etcd.
	if err := d.local.Put(hostlocal.Joined{EndpointID: ep.EndpointID, SandboxKey: req.SandboxKey, Gateway: gw, Subnet: ep.Subnet}); err != nil {
		_ = d.dp.DeleteLink(spec.HostIf)
		return nil, err
	}
	d.localChanged()
	d.log.Info("endpoint joined", "network", short(req.NetworkID), "endpoint", short(ep.EndpointID),
		"ifname", spec.HostIf, "ip", ep.IPv4, "ip6", ep.IPv6, "gateway", gw)
	return resp, nil
}

// Leave removes the veth pair (and with it the host route).
func (d *Driver) Leave(req *network.LeaveRequest) error {
	d.ports.Close(req.EndpointID) // Docker revokes first; a Leave without it must not keep the ports
	if err := d.dp.DeleteLink(dataplane.HostIfName(req.EndpointID)); err != nil {
		return err
	}
	if err := d.local.Delete(req.EndpointID); err != nil {
		return err
	}
	d.localChanged()
	ctx, cancel := d.ctx()
	defer cancel()
	// Only published ports (and what tabby before 0.6 kept in the record)
	// are in etcd to undo; a plain container's Leave writes nothing there.
	// The interface is gone whatever etcd says; while etcd is unreachable
	// the record follows when it answers (before DeleteEndpoint's removal:
	// one queue).
	if d.recordHoldsJoin(req.EndpointID) {
		unjoin := func(ctx context.Context) error {
			err := datastore.Update(ctx, d.store, datastore.EndpointKey(d.node, req.EndpointID),
				func(e *datastore.WorkloadEndpoint, exists bool) error {
					if !exists {
						return datastore.ErrNotFound
					}
					e.SandboxKey, e.Gateway, e.Ports = "", "", nil
					return nil
				})
			if errors.Is(err, datastore.ErrNotFound) {
				return nil
			}
			return err
		}
		if _, err := d.store.NowOrLater(ctx, unjoin); err != nil {
			return err
		}
	}
	d.log.Info("endpoint left", "network", short(req.NetworkID), "endpoint", short(req.EndpointID))
	return nil
}

// recordHoldsJoin reports whether the endpoint's record (as the view has
// it) carries anything of a join: published ports, or the sandbox fields
// older versions wrote. Unknown counts as yes.
func (d *Driver) recordHoldsJoin(id string) bool {
	e, _, ok := datastore.ViewGet[datastore.WorkloadEndpoint](d.view, datastore.EndpointKey(d.node, id))
	if !ok {
		return len(d.view.Keys(datastore.EndpointKey(d.node, id))) > 0
	}
	return len(e.Ports) > 0 || e.SandboxKey != "" || e.Gateway != ""
}

// AllocateNetwork is only called in swarm mode.
func (d *Driver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{}, nil
}

// FreeNetwork is only called in swarm mode.
func (d *Driver) FreeNetwork(*network.FreeNetworkRequest) error { return nil }

// DiscoverNew is unused: tabby learns peers from etcd.
func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error { return nil }

// DiscoverDelete is unused: tabby learns peers from etcd.
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
