package ipamdriver

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// dockerHandlePrefix starts the handle of every address Docker requested.
const dockerHandlePrefix = "docker-"

// Collector releases addresses this node assigned for Docker that no
// endpoint or network has used for a grace period: what is left when the
// daemon dies between assigning an address and recording its endpoint, or
// with a queued release (Calico's IPAM garbage collection, with its leak
// grace period). The grace period covers the moment between Docker's
// RequestAddress and CreateEndpoint, when the address is rightly unused.
type Collector struct {
	alloc *Allocator
	grace time.Duration
	now   func() time.Time
	seen  map[string]time.Time // leaked handle -> first seen leaked
}

// NewCollector returns the collector of the allocator's node.
func NewCollector(alloc *Allocator, grace time.Duration) *Collector {
	return &Collector{alloc: alloc, grace: grace, now: time.Now, seen: map[string]time.Time{}}
}

// Sweep reads IPAM once, releases the node's Docker handles found leaked in
// an earlier sweep at least the grace period ago and still leaked, and
// returns their findings. Handles of other nodes are theirs to collect (a
// gone node's with `tabby delete node`).
func (c *Collector) Sweep(ctx context.Context) ([]Finding, error) {
	s, err := ReadState(ctx, c.alloc.store)
	if err != nil {
		return nil, err
	}
	now := c.now()
	leaked := map[string]bool{}
	var released []Finding
	for _, f := range Check(s) {
		if f.Kind != "leaked" || !strings.HasPrefix(f.Handle, dockerHandlePrefix) {
			continue
		}
		first, ok := c.seen[f.Handle]
		if !ok {
			var h datastore.Handle
			if _, err := c.alloc.store.Get(ctx, datastore.HandleKey(f.Handle), &h); errors.Is(err, datastore.ErrNotFound) {
				continue
			} else if err != nil {
				return released, err
			}
			if h.Node != c.alloc.node {
				continue
			}
			first = now
		}
		leaked[f.Handle] = true
		c.seen[f.Handle] = first
		if now.Sub(first) < c.grace {
			continue
		}
		if err := c.alloc.ReleaseHandle(ctx, f.Handle); err != nil {
			return released, err
		}
		delete(c.seen, f.Handle)
		delete(leaked, f.Handle)
		released = append(released, f)
	}
	for h := range c.seen {
		if !leaked[h] {
			delete(c.seen, h) // used or released since
		}
	}
	return released, nil
}

// Run sweeps every interval until ctx ends, reporting each release and
// each failed sweep to report.
func (c *Collector) Run(ctx context.Context, interval time.Duration, report func([]Finding, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if released, err := c.Sweep(ctx); len(released) > 0 || err != nil {
			report(released, err)
		}
	}
}
