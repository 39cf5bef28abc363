package plugin

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/tabbynet/tabby/datastore"
)

// Labeler records the container labels of an endpoint.
type Labeler interface {
	SetEndpointLabels(ctx context.Context, endpointID string, labels map[string]string) error
}

// syncLabels copies `tabby.label.*` container labels onto the container's
// tabby endpoints: from a listing at start, then on every network connect.
// It runs apart from the plugin handlers (Docker holds locks during them).
func syncLabels(ctx context.Context, docker *client.Client, l Labeler, log *slog.Logger) {
	for ctx.Err() == nil {
		err := syncLabelsOnce(ctx, docker, l)
		if ctx.Err() != nil {
			return
		}
		log.Debug("docker event stream ended; resyncing labels", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func syncLabelsOnce(ctx context.Context, docker *client.Client, l Labeler) error {
	f := filters.NewArgs(filters.Arg("type", "network"), filters.Arg("event", "connect"))
	msgs, errs := docker.Events(ctx, events.ListOptions{Filters: f})
	ctrs, err := docker.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return err
	}
	for _, c := range ctrs {
		if c.NetworkSettings == nil {
			continue
		}
		for _, ep := range c.NetworkSettings.Networks {
			if ep != nil {
				labelOne(ctx, l, ep.EndpointID, c.Labels)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			if !isTabby(m.Actor.Attributes["type"]) {
				continue
			}
			c, err := docker.ContainerInspect(ctx, m.Actor.Attributes["container"])
			if err != nil || c.NetworkSettings == nil || c.Config == nil {
				continue
			}
			if ep, ok := c.NetworkSettings.Networks[m.Actor.Attributes["name"]]; ok && ep != nil {
				labelOne(ctx, l, ep.EndpointID, c.Config.Labels)
			}
		}
	}
}

// labelOne retries briefly on etcd trouble; endpoints of other drivers are
// not tabby's and are skipped.
func labelOne(ctx context.Context, l Labeler, endpointID string, labels map[string]string) {
	for i := 0; i < 5 && endpointID != ""; i++ {
		err := l.SetEndpointLabels(ctx, endpointID, labels)
		if err == nil || errors.Is(err, datastore.ErrNotFound) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
