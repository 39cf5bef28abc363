// Package dockersync learns from Docker what it never tells a driver:
// network names and labels, containers' names, labels and aliases, which
// endpoints Docker still has, where its sandboxes are; and makes tabby
// networks cluster-wide by creating them on every host. It runs apart from
// the plugin's request handlers, which must never call Docker.
package dockersync

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/tabbynet/tabby/datastore"
)

// Namer records a network's Docker name.
type Namer interface {
	SetNetworkName(ctx context.Context, id, name, driver string, labels map[string]string) error
}

// legacyDriverNames are the names of tabby's legacy socket and of the
// managed plugin `make plugin` creates.
var legacyDriverNames = []string{"tabby", "tabby:latest"}

// tabbyDrivers returns every name Docker knows tabby by on this host: the
// legacy ones and those of the managed plugins that run tabby. A managed
// plugin's name is the reference it was installed from (such as
// registry.example:5000/tabby:1.2), and stays so across docker plugin
// upgrade. When Docker does not answer, the legacy names.
func tabbyDrivers(ctx context.Context, docker *client.Client) map[string]bool {
	names := map[string]bool{}
	for _, n := range legacyDriverNames {
		names[n] = true
	}
	// Unfiltered: Docker 20.10's capability filter matches no managed
	// network driver here.
	plugins, err := docker.PluginList(ctx, filters.NewArgs())
	if err != nil {
		return names
	}
	for _, p := range plugins {
		if p != nil && p.Config.Interface.Socket == "tabby.sock" && len(p.Config.Entrypoint) > 0 && path.Base(p.Config.Entrypoint[0]) == "tabby" {
			names[p.Name] = true
		}
	}
	return names
}

// driverSet answers whether a driver name is tabby's for the event loops:
// an unknown name (another driver's, or a plugin installed since) asks
// Docker again, at most every ten seconds.
type driverSet struct {
	docker  *client.Client
	names   map[string]bool
	checked time.Time
}

func newDriverSet(ctx context.Context, docker *client.Client) *driverSet {
	return &driverSet{docker: docker, names: tabbyDrivers(ctx, docker), checked: time.Now()}
}

func (d *driverSet) has(ctx context.Context, name string) bool {
	if !d.names[name] && time.Since(d.checked) > 10*time.Second {
		d.names, d.checked = tabbyDrivers(ctx, d.docker), time.Now()
	}
	return d.names[name]
}

// SyncNames learns network names from Docker: Docker never sends them to a
// driver, and asking Docker from inside a plugin request deadlocks, so this
// runs apart from the handlers, from a listing at start and then events.
func SyncNames(ctx context.Context, docker *client.Client, namer Namer, log *slog.Logger) {
	followDocker(ctx, log, "network names", func(ctx context.Context) error { return syncNamesOnce(ctx, docker, namer) })
}

// followDocker runs once (a listing, then Docker's event stream) again
// whenever the stream ends, until ctx ends.
// eachEvent hands every event to fn until the stream fails or ctx ends.
func eachEvent(ctx context.Context, msgs <-chan events.Message, errs <-chan error, fn func(events.Message)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			fn(m)
		}
	}
}

func followDocker(ctx context.Context, log *slog.Logger, what string, once func(context.Context) error) {
	for ctx.Err() == nil {
		err := once(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Debug("docker event stream ended; resyncing", "what", what, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func syncNamesOnce(ctx context.Context, docker *client.Client, namer Namer) error {
	f := filters.NewArgs(filters.Arg("type", "network"), filters.Arg("event", "create"))
	msgs, errs := docker.Events(ctx, events.ListOptions{Filters: f})
	nets, err := tabbyNetworks(ctx, docker)
	if err != nil {
		return err
	}
	drivers := newDriverSet(ctx, docker)
	for _, n := range nets {
		nameOne(ctx, namer, n.ID, n.Name, n.Driver, n.Labels)
	}
	return eachEvent(ctx, msgs, errs, func(m events.Message) {
		if drivers.has(ctx, m.Actor.Attributes["type"]) {
			// Events carry no labels: ask (this loop is no handler).
			var labels map[string]string
			if n, err := docker.NetworkInspect(ctx, m.Actor.ID, dnetwork.InspectOptions{}); err == nil {
				labels = n.Labels
			}
			nameOne(ctx, namer, m.Actor.ID, m.Actor.Attributes["name"], m.Actor.Attributes["type"], labels)
		}
	})
}

// nameOne records one name; a network tabby never stored (another
// driver's) is skipped.
func nameOne(ctx context.Context, namer Namer, id, name, driver string, labels map[string]string) {
	if name != "" {
		retryBriefly(ctx, func() error { return namer.SetNetworkName(ctx, id, name, driver, labels) })
	}
}

// retryBriefly retries fn a few times while etcd is slow; ErrNotFound (a
// resource that is not tabby's) ends it like success.
func retryBriefly(ctx context.Context, fn func() error) {
	for i := 0; i < 5; i++ {
		err := fn()
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
