package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/policy"
)

// PolicyApplier installs a compiled rule set whose sets the index fills,
// or only set element changes (policy.Enforcer).
type PolicyApplier interface {
	ApplyIndexed(script string, sets policy.SetSource, delta map[string]policy.SetChange) (bool, error)
	ApplyElements(delta map[string]policy.SetChange) (bool, error)
}

// LabelPrefix marks the container labels that become endpoint labels
// (`tabby.label.role=db` gives the endpoint `role=db`).
const LabelPrefix = "tabby.label."

// policyState is what the policy loop keeps between runs: the selector
// sets' members, followed one endpoint change at a time, and what changed.
type policyState struct {
	run    sync.Mutex // one SyncPolicy at a time
	mu     sync.Mutex // what the subscribers write
	primed bool       // subscribed to the view
	// dirty are the endpoints changed since the last run, as they are now
	// (nil: gone or not valid): the view keeps only the keys of other
	// hosts' endpoints, so their values are taken here as they change.
	dirty map[string]*noted
	// labels holds each distinct label set of dirty's endpoints once (the
	// replicas of a service): a burst of thousands between two runs would
	// otherwise hold a decoded map each. Emptied with dirty.
	labels  map[string]map[string]string
	rebuild bool // something besides other hosts' set members changed
	members *policy.Members
	mine    string // the key prefix of this host's endpoints
	// remote are other hosts' endpoints published on every host.
	remote map[string]policy.Endpoint
}

func newPolicyState(node string) *policyState {
	return &policyState{mine: datastore.EndpointsOf(node), dirty: map[string]*noted{}, labels: map[string]map[string]string{}, rebuild: true,
		members: policy.NewMembers(), remote: map[string]policy.Endpoint{}}
}

// endpointChanged and structureChanged are the view's subscribers: they
// only take note (the view's goroutine must not block).
func (p *policyState) endpointChanged(ch datastore.Change) {
	now := note(ch)
	p.mu.Lock()
	defer p.mu.Unlock()
	if now != nil {
		k := policy.LabelsKey(now.labels)
		if held, ok := p.labels[k]; ok {
			now.labels = held
		} else {
			p.labels[k] = now.labels
		}
	}
	p.dirty[ch.Key] = now
}

// noted is what the policy index takes of a changed endpoint.
type noted struct {
	node       string
	labels     map[string]string
	profiles   []string
	addrs      []netip.Addr
	everywhere bool
	ports      []datastore.PortMapping
}

// note is the changed endpoint as it is now; nil: gone or not valid.
func note(ch datastore.Change) *noted {
	if ch.Deleted {
		return nil
	}
	e, err := datastore.Decode[datastore.WorkloadEndpoint](ch.Key, ch.Value)
	if err != nil {
		return nil
	}
	return &noted{node: e.Node, labels: e.Labels, profiles: e.Profiles, addrs: e.Addrs(), everywhere: e.PublishEverywhere, ports: e.Ports}
}

func (p *policyState) structureChanged(datastore.Change) {
	p.mu.Lock()
	p.rebuild = true
	p.mu.Unlock()
}

// SyncPolicy brings enforcement up to date. When only other hosts'
// endpoints changed it updates the sets' elements (work in proportion to
// the change); otherwise it compiles this host's chains again, naming the
// sets only, and the enforcer sends the difference with the sets' element
// changes: neither costs the cluster's size.
func (d *Driver) SyncPolicy(ctx context.Context, a PolicyApplier) error {
	if err := d.view.Wait(ctx, 0); err != nil {
		return err
	}
	p := d.pol
	p.run.Lock()
	defer p.run.Unlock()
	if !p.primed {
		// Subscribing hands over every endpoint the view holds, as changes,
		// here, while run is held: they go into the index at once. Noted in
		// dirty, a large cluster's endpoints would all be held decoded
		// until the first run took them (most of a restarted daemon's
		// peak memory).
		var replayed atomic.Bool
		d.view.Subscribe(datastore.EndpointsDir, func(ch datastore.Change) {
			if replayed.Load() {
				p.endpointChanged(ch)
				return
			}
			d.takeEndpoint(ch.Key, note(ch))
		})
		replayed.Store(true)
		for _, dir := range []string{datastore.ProfilesDir, datastore.PoliciesDir, datastore.NodesDir} {
			d.view.Subscribe(dir, p.structureChanged)
		}
		p.primed = true
	}
	p.mu.Lock()
	dirty, rebuild := p.dirty, p.rebuild
	p.dirty, p.rebuild = map[string]*noted{}, false
	clear(p.labels)
	p.mu.Unlock()
	if d.takeEndpoints(dirty) || len(dirty) == 0 {
		rebuild = true // a local change, or a resync
	}
	if !rebuild {
		delta := p.members.Delta()
		if len(delta) == 0 {
			return nil
		}
		_, err := a.ApplyElements(delta)
		if err == nil {
			return nil
		}
		d.log.Debug("policy: element update failed, compiling again", "err", err)
	}
	err := d.compilePolicy(ctx, a)
	if err != nil {
		p.mu.Lock()
		p.rebuild = true
		p.mu.Unlock()
	}
	return err
}

// takeEndpoints moves changed endpoint records into the index and reports
// whether the rule set's structure may have changed (an endpoint of this
// host, or one published everywhere).
func (d *Driver) takeEndpoints(changed map[string]*noted) (structural bool) {
	for key, e := range changed {
		structural = d.takeEndpoint(key, e) || structural
	}
	return structural
}

// takeEndpoint is takeEndpoints for one endpoint (nil: gone). Callers
// hold d.pol.run.
func (d *Driver) takeEndpoint(key string, e *noted) (structural bool) {
	p := d.pol
	_, wasRemote := p.remote[key]
	delete(p.remote, key)
	structural = wasRemote || strings.HasPrefix(key, p.mine)
	if e == nil {
		p.members.Delete(key)
		return structural
	}
	p.members.Put(key, policy.Endpoint{Labels: e.labels, Profiles: e.profiles, Addrs: e.addrs})
	if e.node != d.node && e.everywhere && len(e.ports) > 0 {
		p.remote[key] = policy.Endpoint{Addrs: e.addrs, Ports: e.ports}
		structural = true
	}
	return structural
}

// compilePolicy compiles profiles and policies for this host's endpoints,
// with selector sets from the index, and applies the result.
func (d *Driver) compilePolicy(ctx context.Context, a PolicyApplier) error {
	eps, err := fromView[datastore.WorkloadEndpoint](ctx, d, datastore.EndpointsOf(d.node))
	if err != nil {
		return err
	}
	profs, err := fromView[datastore.Profile](ctx, d, datastore.ProfilesDir)
	if err != nil {
		return err
	}
	pols, err := fromView[datastore.NetworkPolicy](ctx, d, datastore.PoliciesDir)
	if err != nil {
		return err
	}
	// A resource written past the CLI's validation must not hold every
	// other change back: it is left out, loudly.
	in := policy.Input{Profiles: map[string]datastore.Profile{}, Host: d.hostAccess, Members: d.pol.members}
	for _, p := range pols {
		if err := policy.Validate(p); err != nil {
			d.log.Warn("NetworkPolicy ignored", "err", err)
			continue
		}
		in.Policies = append(in.Policies, p)
	}
	for _, p := range profs {
		if err := policy.ValidateRules("Profile "+p.Name, p.Ingress, p.Egress); err != nil {
			d.log.Warn("Profile ignored: its endpoints drop everything", "err", err)
			continue
		}
		in.Profiles[p.Name] = p
	}
	d.pol.members.SetProfiles(in.Profiles)
	// This host's joined endpoints are those of the host-local state.
	joined := d.local.All()
	sandbox := map[string][]netip.Addr{}
	for _, e := range eps {
		if j, ok := joined[e.EndpointID]; ok && e.Node == d.node {
			sandbox[j.SandboxKey] = append(sandbox[j.SandboxKey], e.Addrs()...)
		}
	}
	for _, e := range eps {
		j, ok := joined[e.EndpointID]
		if !ok || e.Node != d.node {
			continue
		}
		pe := policy.Endpoint{Labels: e.Labels, Profiles: e.Profiles, Addrs: e.Addrs(),
			Iface: e.Interface, Ports: e.Ports, Internal: e.Internal, Everywhere: e.PublishEverywhere}
		for _, a := range sandbox[j.SandboxKey] {
			if !slices.Contains(pe.Addrs, a) {
				pe.Sandbox = append(pe.Sandbox, a)
			}
		}
		in.Local = append(in.Local, pe)
	}
	for _, key := range slices.Sorted(maps.Keys(d.pol.remote)) {
		in.Remote = append(in.Remote, d.pol.remote[key])
	}
	if len(in.Remote) > 0 || slices.ContainsFunc(in.Local, func(e policy.Endpoint) bool { return e.Everywhere }) {
		in.Nodes = d.nodeAddrs(ctx)
	}
	in.Encrypted = d.encryptedPeers()
	script, err := policy.Compile(in)
	if err != nil {
		return err
	}
	// The sets the kernel holds move on by the index's changes alone; new
	// ones (and a whole table) are filled from it.
	changed, err := a.ApplyIndexed(script, d.pol.members, d.pol.members.Delta())
	if err != nil {
		return fmt.Errorf("apply policy: %w", err)
	}
	if changed {
		d.log.Debug("policy applied", "endpoints", len(in.Local), "policies", len(pols))
	}
	return nil
}

// nodeAddrs lists the tabby hosts' addresses and tunnel addresses (from
// their Node records).
func (d *Driver) nodeAddrs(ctx context.Context) []netip.Addr {
	nodes, err := fromView[datastore.Node](ctx, d, datastore.NodesDir)
	if err != nil {
		d.log.Warn("policy: nodes", "err", err)
	}
	var out []netip.Addr
	for _, n := range nodes {
		// Tunnel addresses too: a connection forwarded over a tunnel is
		// masqueraded to the tunnel device's address.
		for _, s := range []string{n.IPv4, n.IPv6, n.VXLANTunnelAddress, n.IPIPTunnelAddress, n.WireguardInterfaceAddr} {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Addr())
			} else if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

// RunPolicy keeps enforcement current from changes to endpoints (of every
// host), profiles and policies, with a periodic resync.
func (d *Driver) RunPolicy(ctx context.Context, a PolicyApplier, resync time.Duration) {
	dirs := []string{datastore.EndpointsDir, datastore.ProfilesDir, datastore.PoliciesDir, datastore.NodesDir}
	d.view.OnChange(ctx, dirs, resync, d.localKick, func() {
		if err := d.SyncPolicy(ctx, a); err != nil && ctx.Err() == nil {
			d.log.Warn("policy sync failed", "err", err)
		}
	})
}

// SetEndpointContainer records the container behind an endpoint: its name
// and aliases (for DNS) and its labels with LabelPrefix (prefix removed), keeping the
// network label. Both come from Docker outside any plugin request.
func (d *Driver) SetEndpointContainer(ctx context.Context, endpointID, name string, container map[string]string, aliases []string) error {
	err := datastore.Update(ctx, d.store, datastore.EndpointKey(d.node, endpointID), func(e *datastore.WorkloadEndpoint, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		labels := map[string]string{LabelNetwork: e.Labels[LabelNetwork]}
		for k, v := range container {
			if name, ok := strings.CutPrefix(k, LabelPrefix); ok && name != "" && name != LabelNetwork {
				labels[name] = v
			}
		}
		e.Labels, e.Workload, e.Aliases = labels, name, aliases
		return nil
	})
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("label endpoint %s: %w", short(endpointID), err)
	}
	return err
}
