package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// othersRefresh is how often the followed routes are listed again: the
// kernel does not announce every removal (IPv4 routes flushed with their
// address or link), and a route kept too long only refuses more.
const othersRefresh = 30 * time.Second

// others are the main table's routes of other protocols (connected
// subnets, the default route, other daemons' routes), which no learned
// route may cover. Followed from the kernel's notifications, they spare
// each batch of learned routes a listing of the whole table (10,000 routes
// arrive in some 60 batches).
type others struct {
	mu     sync.Mutex
	live   bool // following; otherwise Protected lists the kernel
	routes map[routeKey]bool
}

// routeKey is what tells two routes of the main table apart.
type routeKey struct {
	dst  netip.Prefix
	prio int
	tos  int
}

// keyOf returns the route's key; a default route reads as 0.0.0.0/0
// (::/0).
func keyOf(r netlink.Route) (routeKey, bool) {
	k := routeKey{prio: r.Priority, tos: r.Tos}
	switch {
	case r.Dst != nil:
		var ok bool
		if k.dst, ok = prefixOf(r); !ok {
			return k, false
		}
	case r.Family == netlink.FAMILY_V6:
		k.dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	default:
		k.dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return k, true
}

// note applies one notification.
func (o *others) note(u netlink.RouteUpdate) {
	if u.Table != unix.RT_TABLE_MAIN {
		return
	}
	k, ok := keyOf(u.Route)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// A route of ours replacing one with its key takes the key.
	if u.Type == unix.RTM_NEWROUTE && u.Protocol != RouteProtocol {
		o.routes[k] = true
	} else {
		delete(o.routes, k)
	}
}

// reset replaces what is followed with a listing of the main table.
func (o *others) reset(d *Dataplane) error {
	m := map[routeKey]bool{}
	err := d.eachMainRoute(func(r netlink.Route) {
		if r.Protocol == RouteProtocol || r.Table != unix.RT_TABLE_MAIN {
			return
		}
		if k, ok := keyOf(r); ok {
			m[k] = true
		}
	})
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.routes, o.live = m, true
	o.mu.Unlock()
	return nil
}

func (o *others) stop() {
	o.mu.Lock()
	o.live = false
	o.mu.Unlock()
}

// prefixes returns the followed destinations, or false when not following.
func (o *others) prefixes() ([]netip.Prefix, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.live {
		return nil, false
	}
	seen := make(map[netip.Prefix]bool, len(o.routes))
	out := make([]netip.Prefix, 0, len(o.routes))
	for k := range o.routes {
		if !seen[k.dst] {
			seen[k.dst] = true
			out = append(out, k.dst)
		}
	}
	return out, true
}

// Follow keeps the other protocols' routes current from the kernel's
// notifications until ctx ends, starting again (with a listing) whenever
// they stop, as when the kernel dropped some for a full socket buffer;
// each stop is told to onStop. Until it follows, Protected lists.
func (t *Table) Follow(ctx context.Context, onStop func(error)) {
	for {
		err := t.followOnce(ctx)
		t.others.stop()
		if ctx.Err() != nil {
			return
		}
		onStop(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (t *Table) followOnce(ctx context.Context) error {
	ns := netns.None()
	if t.dp.nsPath != "" {
		var err error
		if ns, err = netns.GetFromPath(t.dp.nsPath); err != nil {
			return fmt.Errorf("network namespace %s: %w", t.dp.nsPath, err)
		}
		defer ns.Close()
	}
	ch := make(chan netlink.RouteUpdate, 256) // the socket buffer holds the burst
	done := make(chan struct{})
	defer close(done)
	// Subscribed before the listing: a change made meanwhile is applied
	// after it, in order.
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(error) {}, // a lost notification closes ch: listed again
	})
	if err != nil {
		return fmt.Errorf("follow routes: %w", err)
	}
	refresh := time.NewTicker(othersRefresh)
	defer refresh.Stop()
	for {
		if err := t.others.reset(t.dp); err != nil {
			return err
		}
	events:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case u, ok := <-ch:
				if !ok {
					return errors.New("route notifications stopped")
				}
				t.others.note(u)
			case <-refresh.C:
				break events
			}
		}
	}
}
