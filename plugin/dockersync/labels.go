package dockersync

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// Labeler records the container behind an endpoint.
type Labeler interface {
	SetEndpointContainer(ctx context.Context, endpointID, name string, labels map[string]string, aliases []string) error
}

// dnsAliases are the names an endpoint answers to besides its container's:
// --network-alias, Compose's service name, and (Docker 25+) its DNS names.
func dnsAliases(name string, ep *dnetwork.EndpointSettings) []string {
	var out []string
	for _, a := range append(append([]string(nil), ep.Aliases...), ep.DNSNames...) {
		if a != "" && a != name && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// SyncLabels copies the container's name and `tabby.label.*` labels onto
// its tabby endpoints: from a listing at start, then on every network
// connect.
// It runs apart from the plugin handlers (Docker holds locks during them).
func SyncLabels(ctx context.Context, docker *client.Client, l Labeler, log *slog.Logger) {
	followDocker(ctx, log, "container labels", func(ctx context.Context) error { return syncLabelsOnce(ctx, docker, l) })
}

func syncLabelsOnce(ctx context.Context, docker *client.Client, l Labeler) error {
	f := filters.NewArgs(filters.Arg("type", "network"), filters.Arg("event", "connect"))
	msgs, errs := docker.Events(ctx, events.ListOptions{Filters: f})
	ctrs, err := docker.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return err
	}
	drivers := newDriverSet(ctx, docker)
	for _, c := range ctrs {
		if c.NetworkSettings == nil {
			continue
		}
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		for _, ep := range c.NetworkSettings.Networks {
			if ep != nil {
				labelOne(ctx, l, ep.EndpointID, name, c.Labels, dnsAliases(name, ep))
			}
		}
	}
	return eachEvent(ctx, msgs, errs, func(m events.Message) {
		if !drivers.has(ctx, m.Actor.Attributes["type"]) {
			return
		}
		c, err := docker.ContainerInspect(ctx, m.Actor.Attributes["container"])
		if err != nil || c.NetworkSettings == nil || c.Config == nil {
			return
		}
		if ep, ok := c.NetworkSettings.Networks[m.Actor.Attributes["name"]]; ok && ep != nil {
			name := strings.TrimPrefix(c.Name, "/")
			labelOne(ctx, l, ep.EndpointID, name, c.Config.Labels, dnsAliases(name, ep))
		}
	})
}

// labelOne records one endpoint's container; endpoints of other drivers
// are not tabby's and are skipped.
func labelOne(ctx context.Context, l Labeler, endpointID, name string, labels map[string]string, aliases []string) {
	if endpointID != "" {
		retryBriefly(ctx, func() error { return l.SetEndpointContainer(ctx, endpointID, name, labels, aliases) })
	}
}
