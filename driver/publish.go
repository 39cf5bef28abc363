package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/ports"
)

// Docker's option keys for what `docker run -p` and EXPOSE ask.
const (
	optPortMap = "com.docker.network.portmap"
)

// portRequests reads Docker's port bindings from a request's options:
// each a JSON object of Proto (6 tcp, 17 udp), Port, HostIP, HostPort and
// HostPortEnd.
func portRequests(opts map[string]any) ([]ports.Request, error) {
	raw, ok := opts[optPortMap].([]any)
	if !ok {
		return nil, nil
	}
	var out []ports.Request
	for _, x := range raw {
		m, ok := x.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("port binding %v is not an object", x)
		}
		num := func(k string) (uint16, error) {
			f, _ := m[k].(float64)
			if f < 0 || f > 65535 || f != float64(uint16(f)) {
				return 0, fmt.Errorf("port binding %v: %s %v is not a port", m, k, m[k])
			}
			return uint16(f), nil
		}
		var r ports.Request
		proto, _ := m["Proto"].(float64)
		switch proto {
		case 6:
			r.Proto = "tcp"
		case 17:
			r.Proto = "udp"
		default:
			return nil, fmt.Errorf("publishing protocol %v: tabby publishes tcp and udp only", m["Proto"])
		}
		var err error
		if r.Port, err = num("Port"); err != nil {
			return nil, err
		}
		if r.HostPort, err = num("HostPort"); err != nil {
			return nil, err
		}
		if r.End, err = num("HostPortEnd"); err != nil {
			return nil, err
		}
		r.HostIP, _ = m["HostIP"].(string)
		if r.HostIP != "" {
			if _, err := netip.ParseAddr(r.HostIP); err != nil {
				return nil, fmt.Errorf("port binding: host IP %q is not an address", r.HostIP)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// ProgramExternalConnectivity publishes the container's ports on this
// host (`docker run -p`, `-P`): the proxy holds each host port and serves
// the host's own connections, the policy ruleset DNATs everyone else's.
// A port that is taken fails the call, with nothing left held.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	reqs, err := portRequests(req.Options)
	if err != nil || len(reqs) == 0 {
		return err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	ep, err := recordOf[datastore.WorkloadEndpoint](ctx, d, datastore.EndpointKey(d.node, req.EndpointID))
	if err != nil {
		return fmt.Errorf("publish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	if ep.Internal {
		return fmt.Errorf("network %s is --internal: it publishes no port; remove -p/-P or use another network", short(req.NetworkID))
	}
	bound, err := d.ports.Open(req.EndpointID, targetOf(ep), reqs)
	if err != nil {
		return err
	}
	if err := d.setPorts(ctx, req.EndpointID, bound); err != nil {
		d.ports.Close(req.EndpointID)
		return fmt.Errorf("publish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	d.log.Info("ports published", "endpoint", short(req.EndpointID), "ports", fmt.Sprint(bound))
	return nil
}

// targetOf is where an endpoint's published ports lead.
func targetOf(e datastore.WorkloadEndpoint) ports.Target {
	var t ports.Target
	t.V4, _ = netip.ParseAddr(e.IPv4)
	t.V6, _ = netip.ParseAddr(e.IPv6)
	return t
}

// RevokeExternalConnectivity unpublishes the container's ports.
func (d *Driver) RevokeExternalConnectivity(req *network.RevokeExternalConnectivityRequest) error {
	d.ports.Close(req.EndpointID)
	if e, _, ok := datastore.ViewGet[datastore.WorkloadEndpoint](d.view, datastore.EndpointKey(d.node, req.EndpointID)); ok && len(e.Ports) == 0 {
		return nil // nothing published: nothing to write
	}
	ctx, cancel := d.ctx()
	defer cancel()
	if err := d.setPorts(ctx, req.EndpointID, nil); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("unpublish ports of endpoint %s: %w", short(req.EndpointID), err)
	}
	return nil
}

// setPorts records an endpoint's published ports, which the policy sync
// turns into DNAT rules.
func (d *Driver) setPorts(ctx context.Context, id string, ps []datastore.PortMapping) error {
	return datastore.Update(ctx, d.store, datastore.EndpointKey(d.node, id), func(e *datastore.WorkloadEndpoint, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		e.Ports = ps
		return nil
	})
}

// reopenPorts publishes again, after a restart, the ports this host's
// endpoints had; a port taken meanwhile is logged and dropped from the
// record.
func (d *Driver) reopenPorts(ctx context.Context, eps []datastore.WorkloadEndpoint) {
	for _, e := range eps {
		if len(e.Ports) == 0 || d.ports.Has(e.EndpointID) {
			continue
		}
		reqs := make([]ports.Request, 0, len(e.Ports))
		for _, p := range e.Ports {
			reqs = append(reqs, ports.Request{PortMapping: p})
		}
		if _, err := d.ports.Open(e.EndpointID, targetOf(e), reqs); err != nil {
			d.log.Warn("published ports lost: the host port was taken while tabby was down", "endpoint", short(e.EndpointID), "err", err)
			if err := d.setPorts(ctx, e.EndpointID, nil); err != nil {
				d.log.Warn("published ports: record", "endpoint", short(e.EndpointID), "err", err)
			}
		}
	}
}
