package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/policy"
)

// PolicyApplier installs a compiled rule set (policy.Enforcer).
type PolicyApplier interface {
	Apply(script string) (bool, error)
}

// LabelPrefix marks the container labels that become endpoint labels
// (`tabby.label.role=db` gives the endpoint `role=db`).
const LabelPrefix = "tabby.label."

// SyncPolicy compiles profiles and policies for this host's endpoints, with
// selector sets over every endpoint of the cluster, and applies the result.
func (d *Driver) SyncPolicy(ctx context.Context, a PolicyApplier) error {
	eps, err := fromView[datastore.WorkloadEndpoint](ctx, d, datastore.EndpointsDir)
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
	in := policy.Input{Profiles: map[string]datastore.Profile{}, Host: d.hostAccess}
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
	// This host's joined endpoints are those of the host-local state.
	joined := d.local.All()
	sandbox := map[string][]netip.Addr{}
	for _, e := range eps {
		if j, ok := joined[e.EndpointID]; ok && e.Node == d.node {
			sandbox[j.SandboxKey] = append(sandbox[j.SandboxKey], e.Addrs()...)
		}
	}
	for _, e := range eps {
		pe := policy.Endpoint{Labels: e.Labels, Profiles: e.Profiles, Addrs: e.Addrs()}
		in.All = append(in.All, pe)
		if j, ok := joined[e.EndpointID]; ok && e.Node == d.node {
			pe.Iface, pe.Ports, pe.Internal, pe.Everywhere = e.Interface, e.Ports, e.Internal, e.PublishEverywhere
			for _, a := range sandbox[j.SandboxKey] {
				if !slices.Contains(pe.Addrs, a) {
					pe.Sandbox = append(pe.Sandbox, a)
				}
			}
			in.Local = append(in.Local, pe)
		}
	}
	for _, e := range eps {
		if e.Node != d.node && e.PublishEverywhere && len(e.Ports) > 0 {
			in.Remote = append(in.Remote, policy.Endpoint{Addrs: e.Addrs(), Ports: e.Ports})
		}
	}
	if len(in.Remote) > 0 || slices.ContainsFunc(in.Local, func(e policy.Endpoint) bool { return e.Everywhere }) {
		in.Nodes = d.nodeAddrs(ctx)
	}
	script, err := policy.Compile(in)
	if err != nil {
		return err
	}
	changed, err := a.Apply(script)
	if err != nil {
		return fmt.Errorf("apply policy: %w", err)
	}
	if changed {
		d.log.Debug("policy applied", "endpoints", len(in.Local), "policies", len(pols))
	}
	return nil
}

// nodeAddrs lists the tabby hosts' addresses (from their Node records).
func (d *Driver) nodeAddrs(ctx context.Context) []netip.Addr {
	nodes, err := fromView[datastore.Node](ctx, d, datastore.NodesDir)
	if err != nil {
		d.log.Warn("policy: nodes", "err", err)
	}
	var out []netip.Addr
	for _, n := range nodes {
		for _, s := range []string{n.IPv4, n.IPv6} {
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
