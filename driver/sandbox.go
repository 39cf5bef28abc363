package driver

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strconv"
	"sync"

	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/hostlocal"
)

// sandboxPeers returns the sandbox's other tabby endpoints on this host,
// from the host-local state (the join before this one, under the same
// sandbox lock, is in it).
func (d *Driver) sandboxPeers(sandbox, self string) []hostlocal.Joined {
	var out []hostlocal.Joined
	for _, j := range d.local.InSandbox(sandbox) {
		if j.EndpointID != self {
			out = append(out, j)
		}
	}
	return out
}

// pickGateway returns 169.254.1.1 for a sandbox's first tabby endpoint and
// the next free 169.254.1.N for further ones: Docker adds each endpoint's
// on-link gateway route to the same container table, and a second
// 169.254.1.1/32 route would fail with "file exists".
func pickGateway(peers []hostlocal.Joined) (string, error) {
	used := map[string]bool{}
	for _, e := range peers {
		used[e.Gateway] = true
	}
	for i := 1; i < 255; i++ {
		gw := "169.254.1." + strconv.Itoa(i)
		if !used[gw] {
			return gw, nil
		}
	}
	return "", errors.New("a container can join at most 254 tabby networks")
}

// setAsideCovering moves the --subnet routes of the sandbox's other
// endpoints that cover addr out of Docker's sight (dataplane.SandboxTable):
// Docker refuses to program addr while a main-table route covers it. That
// happens when a network without --subnet hands out an address of a pool
// that another network of the container has as its --subnet.
func (d *Driver) setAsideCovering(sandbox string, peers []hostlocal.Joined, addr netip.Addr) error {
	var covering []hostlocal.Joined
	for _, p := range peers {
		if s, err := netip.ParsePrefix(p.Subnet); err == nil && s.Contains(addr) {
			covering = append(covering, p)
		}
	}
	if len(covering) == 0 {
		return nil
	}
	paths := d.sandboxPaths(sandbox) // asks dockerd's PID over its socket: once
	ns, err := dataplane.OpenSandbox(paths...)
	if errors.Is(err, fs.ErrNotExist) && !dataplane.SandboxExists(paths...) {
		// A container being started: Docker makes its namespace after the
		// joins and programs every endpoint in it then, in join order.
		d.log.Debug("sandbox not made yet; nothing to set aside", "sandbox", sandbox)
		return nil
	}
	if err != nil {
		return fmt.Errorf("address %s lies in the --subnet of another network of this container, and its route cannot be moved aside: %w", addr, err)
	}
	defer ns.Close()
	for _, p := range covering {
		gw, err := netip.ParseAddr(p.Gateway)
		if err != nil {
			continue // not joined: it has no route yet
		}
		if err := dataplane.SetSubnetRouteAside(ns, netip.MustParsePrefix(p.Subnet), gw); err != nil {
			return err
		}
		d.log.Info("subnet route set aside", "endpoint", short(p.EndpointID), "subnet", p.Subnet, "ip", addr.String())
	}
	return nil
}

// sandboxLocks holds one mutex per sandbox key while someone uses it.
type sandboxLocks struct {
	mu    sync.Mutex
	locks map[string]*sandboxLock
}

type sandboxLock struct {
	sync.Mutex
	users int
}

// lock waits for key's mutex and returns its unlock; the entry goes when
// its last user leaves, so the map holds only sandboxes being joined.
func (s *sandboxLocks) lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*sandboxLock{}
	}
	l := s.locks[key]
	if l == nil {
		l = &sandboxLock{}
		s.locks[key] = l
	}
	l.users++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
}

// UntrackEndpoint exempts the container behind a joined endpoint from
// connection tracking in its own namespace (dataplane.UntrackSandbox).
// An endpoint not joined here, or whose namespace is already gone, is
// nothing to do.
func (d *Driver) UntrackEndpoint(endpointID string) error {
	j, ok := d.local.Get(endpointID)
	if !ok || j.SandboxKey == "" {
		return nil
	}
	paths := d.sandboxPaths(j.SandboxKey)
	ns, err := dataplane.OpenSandbox(paths...)
	if err != nil {
		if !dataplane.SandboxExists(paths...) {
			return nil
		}
		return fmt.Errorf("untrack endpoint %s: %w", short(endpointID), err)
	}
	defer ns.Close()
	if err := dataplane.UntrackSandbox(ns); err != nil {
		return fmt.Errorf("endpoint %s: %w", short(endpointID), err)
	}
	return nil
}
