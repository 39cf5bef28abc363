package dockersync

import (
	"context"
	"log/slog"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// Untracker exempts the container behind a local endpoint from connection
// tracking in its namespace.
type Untracker interface {
	UntrackEndpoint(endpointID string) error
}

// SyncUntrack untracks every running container's tabby endpoints, then
// each container as it starts or a running one as it joins a network:
// Docker makes a new container's namespace (and its embedded-DNS rules in
// it) after the joins, so the start event is the first moment it can be
// done. A restarted container gets a new namespace and a new start. It
// runs apart from the plugin handlers.
func SyncUntrack(ctx context.Context, docker *client.Client, u Untracker, log *slog.Logger) {
	followDocker(ctx, log, "container conntrack", func(ctx context.Context) error { return untrackOnce(ctx, docker, u, log) })
}

func untrackOnce(ctx context.Context, docker *client.Client, u Untracker, log *slog.Logger) error {
	// Container starts and network connects (a running container joining
	// a tabby network); the filter's keys AND, its values OR.
	f := filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "start"),
		filters.Arg("type", "network"), filters.Arg("event", "connect"))
	msgs, errs := docker.Events(ctx, events.ListOptions{Filters: f})
	ctrs, err := docker.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return err
	}
	for _, c := range ctrs {
		if c.NetworkSettings != nil {
			untrackAll(u, log, c.NetworkSettings.Networks)
		}
	}
	return eachEvent(ctx, msgs, errs, func(m events.Message) {
		id := m.Actor.ID
		if m.Type == events.NetworkEventType {
			id = m.Actor.Attributes["container"]
		}
		if c, err := docker.ContainerInspect(ctx, id); err == nil && c.NetworkSettings != nil {
			untrackAll(u, log, c.NetworkSettings.Networks)
		}
	})
}

// untrackAll untracks a container's endpoints; those of other drivers are
// not joined here and cost nothing.
func untrackAll(u Untracker, log *slog.Logger, nets map[string]*dnetwork.EndpointSettings) {
	for _, ep := range nets {
		if ep == nil || ep.EndpointID == "" {
			continue
		}
		if err := u.UntrackEndpoint(ep.EndpointID); err != nil {
			log.Warn("container traffic stays tracked in its namespace", "err", err)
		}
	}
}
