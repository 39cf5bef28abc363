package plugin

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dnetwork "github.com/docker/docker/api/types/network"
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
	for ctx.Err() == nil {
		err := syncNamesOnce(ctx, docker, namer)
		if ctx.Err() != nil {
			return
		}
		log.Debug("docker event stream ended; resyncing", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func syncNamesOnce(ctx context.Context, docker *client.Client, namer Namer) error {
	f := filters.NewArgs(filters.Arg("type", "network"), filters.Arg("event", "create"))
	msgs, errs := docker.Events(ctx, events.ListOptions{Filters: f})
	lf := filters.NewArgs()
	for _, d := range driverNames {
		lf.Add("driver", d)
	}
	nets, err := docker.NetworkList(ctx, dnetwork.ListOptions{Filters: lf})
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

// nameOne retries briefly: the event can overtake nothing, but etcd may be
// slow, and a network tabby never stored (another driver's) is skipped.
func nameOne(ctx context.Context, namer Namer, id, name, driver string) {
	for i := 0; i < 5 && name != ""; i++ {
		err := namer.SetNetworkName(ctx, id, name, driver)
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
