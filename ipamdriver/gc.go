package ipamdriver

import (
	"context"
	"errors"
	"sort"
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
	alloc    *Allocator
	now      func() time.Time
	suspects *Suspects
}

// NewCollector returns the collector of the allocator's node.
func NewCollector(alloc *Allocator, grace time.Duration) *Collector {
	return &Collector{alloc: alloc, now: time.Now, suspects: NewSuspects(grace)}
}

// Sweep reads IPAM once and releases the node's Docker handles that have
// been leaked, in every sweep, for the grace period, returning their
// findings. Handles of other nodes are theirs to collect (a gone node's
// with `tabby delete node`).
func (c *Collector) Sweep(ctx context.Context) ([]Finding, error) {
	var s State
	var err error
	if c.alloc.view != nil {
		// Everything etcd has, as a listing would: an endpoint recorded a
		// moment ago saves its address.
		if err = c.alloc.view.CatchUp(ctx); err == nil {
			s, err = NodeStateFrom(ctx, c.alloc.view, c.alloc.node)
		}
	} else {
		s, err = ReadState(ctx, c.alloc.store)
	}
	if err != nil {
		return nil, err
	}
	found := map[string]Finding{}
	var suspect []string
	for _, f := range Check(s) {
		if f.Kind != "leaked" || !strings.HasPrefix(f.Handle, dockerHandlePrefix) {
			continue
		}
		// Only leaks need their handle read, to learn which host assigned
		// them; there are usually none.
		var h datastore.Handle
		if _, err := c.alloc.store.Get(ctx, datastore.HandleKey(f.Handle), &h); errors.Is(err, datastore.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		if h.Node == c.alloc.node {
			found[f.Handle] = f
			suspect = append(suspect, f.Handle)
		}
	}
	var released []Finding
	for _, h := range c.suspects.Observe(c.now(), suspect) {
		if err := c.alloc.ReleaseHandle(ctx, h); err != nil {
			return released, err
		}
		released = append(released, found[h])
	}
	return released, nil
}

// Suspects remembers since when each key has been suspect, for sweepers
// that act only on what stays suspect for a whole grace period.
type Suspects struct {
	grace time.Duration
	first map[string]time.Time
}

// NewSuspects returns an empty record.
func NewSuspects(grace time.Duration) *Suspects {
	return &Suspects{grace: grace, first: map[string]time.Time{}}
}

// Observe records one sweep's suspects, seen at now, forgets keys no
// longer suspect, and returns (and forgets) those suspect in every sweep
// for at least the grace period, sorted.
func (s *Suspects) Observe(now time.Time, suspect []string) []string {
	still := map[string]bool{}
	var due []string
	for _, k := range suspect {
		still[k] = true
		first, ok := s.first[k]
		if !ok {
			first = now
			s.first[k] = now
		}
		if now.Sub(first) >= s.grace {
			due = append(due, k)
		}
	}
	for k := range s.first {
		if !still[k] {
			delete(s.first, k)
		}
	}
	for _, k := range due {
		delete(s.first, k)
	}
	sort.Strings(due)
	return due
}
