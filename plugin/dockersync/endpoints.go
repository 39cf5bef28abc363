package dockersync

import (
	"context"
	"log/slog"
	"time"

	"github.com/docker/docker/api/types/filters"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
)

// tabbyNetworks lists the local Docker networks that use tabby's driver.
func tabbyNetworks(ctx context.Context, docker *client.Client) ([]dnetwork.Summary, error) {
	lf := filters.NewArgs()
	for d := range tabbyDrivers(ctx, docker) {
		lf.Add("driver", d)
	}
	return docker.NetworkList(ctx, dnetwork.ListOptions{Filters: lf})
}

// EndpointRemover deletes one endpoint's interface and record.
type EndpointRemover interface {
	DeleteEndpoint(*network.DeleteEndpointRequest) error
}

// SweepEndpoints removes, every interval, the records and host interfaces of this host's
// endpoints that Docker has not had in any sweep for a whole grace period.
// They are left when the daemon dies with an endpoint's removal queued
// during an etcd outage, or after recording an endpoint Docker then gave up
// on. Their addresses, used by no endpoint after that, go to the IPAM
// collector. A sweep is skipped unless Docker answers for every network.
func SweepEndpoints(ctx context.Context, docker *client.Client, view *datastore.View, drv EndpointRemover,
	node string, grace, interval time.Duration, log *slog.Logger) {
	suspects := ipamdriver.NewSuspects(grace)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		known, err := dockerEndpoints(ctx, docker)
		if err != nil {
			log.Debug("endpoint sweep: docker", "err", err)
			continue
		}
		eps := datastore.ViewList[datastore.WorkloadEndpoint](view, datastore.EndpointsOf(node))
		var stale []string
		byID := map[string]datastore.WorkloadEndpoint{}
		for _, e := range eps {
			if !known[e.EndpointID] {
				stale = append(stale, e.EndpointID)
				byID[e.EndpointID] = e
			}
		}
		for _, id := range suspects.Observe(time.Now(), stale) {
			e := byID[id]
			err := drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: e.NetworkID, EndpointID: id})
			log.Warn("removed an endpoint Docker no longer has", "network", e.NetworkID[:min(12, len(e.NetworkID))],
				"endpoint", id[:min(12, len(id))], "ip", e.IPv4, "err", err)
		}
	}
}

// dockerEndpoints returns the IDs of every endpoint Docker has on this
// host's tabby networks.
func dockerEndpoints(ctx context.Context, docker *client.Client) (map[string]bool, error) {
	nets, err := tabbyNetworks(ctx, docker)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, n := range nets {
		res, err := docker.NetworkInspect(ctx, n.ID, dnetwork.InspectOptions{})
		if err != nil {
			return nil, err
		}
		for _, c := range res.Containers {
			known[c.EndpointID] = true
		}
	}
	return known, nil
}
