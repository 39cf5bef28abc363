package plugin

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/tabbynet/tabby/datastore"
)

// Namer records a network's Docker name.
type Namer interface {
	SetNetworkName(ctx context.Context, id, name, driver string) error
}

// driverNames are the names Docker knows tabby by.
var driverNames = []string{"tabby", "tabby:latest"}

// syncNames learns network names from Docker: Docker never sends them to a
// driver, and asking Docker from inside a plugin request deadlocks, so this
// runs apart from the handlers, from a listing at start and then events.
func syncNames(ctx context.Context, docker *client.Client, namer Namer, log *slog.Logger) {
	followDocker(ctx, log, "network names", func(ctx context.Context) error { return syncNamesOnce(ctx, docker, namer) })
}

// followDocker runs once (a listing, then Docker's event stream) again
// whenever the stream ends, until ctx ends.
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
	for _, n := range nets {
		nameOne(ctx, namer, n.ID, n.Name, n.Driver)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case m := <-msgs:
			if isTabby(m.Actor.Attributes["type"]) {
				nameOne(ctx, namer, m.Actor.ID, m.Actor.Attributes["name"], m.Actor.Attributes["type"])
			}
		}
	}
}

func isTabby(driver string) bool {
	for _, d := range driverNames {
		if d == driver {
			return true
		}
	}
	return false
}

// nameOne records one name; a network tabby never stored (another
// driver's) is skipped.
func nameOne(ctx context.Context, namer Namer, id, name, driver string) {
	if name != "" {
		retryBriefly(ctx, func() error { return namer.SetNetworkName(ctx, id, name, driver) })
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
