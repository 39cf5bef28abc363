package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// Kind says who wants a route. Where several want one destination, the
// lowest kind is what the kernel gets: an endpoint on this host beats the
// block's blackhole, a tunnel beats the plain route BGP learned for the
// same block (VXLAN or IPIP carries that pool), and BGP's route comes back
// when the tunnel lets go.
type Kind uint8

const (
	KindEndpoint  Kind = iota // IP dev caliX scope link: a container here
	KindBlackhole             // blackhole BLOCK: a block this host owns
	KindWireGuard             // BLOCK dev wireguard.tabby: encrypted, before any other path
	KindVXLAN                 // BLOCK via TUNNELIP dev vxlan.tabby onlink
	KindIPIP                  // BLOCK via HOSTIP dev tunl0 onlink
	KindLearned               // BLOCK via GW: learned over BGP
	nKinds
)

var kindNames = [nKinds]string{"endpoint", "blackhole", "wireguard", "vxlan", "ipip", "learned"}

func (k Kind) String() string { return kindNames[k] }

// Route is one claim on a destination of the main table.
type Route struct {
	Kind Kind
	Dst  netip.Prefix
	Gw   netip.Addr // VXLAN, IPIP, learned
	Link int        // endpoint, WireGuard, VXLAN, IPIP: the device's index
}

func (r Route) String() string {
	s := r.Kind.String() + " " + r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Link != 0 {
		s += fmt.Sprintf(" (link %d)", r.Link)
	}
	return s
}

// claims holds what each kind wants for one destination, and when (the
// table's generation) that last changed.
type claims struct {
	by  [nKinds]*Route
	gen uint64
}

func (c *claims) winner() (Route, bool) {
	for _, r := range c.by {
		if r != nil {
			return *r, true
		}
	}
	return Route{}, false
}

// Table is the one writer of tabby's routes in the main table. The driver
// (endpoints, blackholes, tunnels) and BGP (learned routes) say what they
// want; the table merges it by Kind, writes the winners in batches, and
// puts back what someone else changed or flushed (Repair).
type Table struct {
	dp     *Dataplane
	mu     sync.Mutex
	claims map[netip.Prefix]*claims
	// synced: the kind's claims are complete (its owner has caught up
	// after a start), so a route of that kind nobody claims is stale.
	synced [nKinds]bool
	// gen counts changes: Repair leaves alone what changed after it listed
	// the kernel (written meanwhile, so missing from its listing).
	gen uint64
	// others are the routes of other protocols, once Follow runs.
	others others
	// claimed counts the destinations each kind claims.
	claimed [nKinds]int
}

func newTable(dp *Dataplane) *Table {
	return &Table{dp: dp, claims: map[netip.Prefix]*claims{}}
}

// Set claims routes; the kernel changes where a claim wins.
func (t *Table) Set(rs ...Route) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ops []op
	var errs []error
	for _, r := range rs {
		if err := r.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Dst = r.Dst.Masked()
		ops = t.change(ops, r.Dst, func(c *claims) { c.by[r.Kind] = &r })
	}
	return errors.Join(append(errs, t.dp.writeRoutes(ops))...)
}

// check refuses a claim the kernel could never take, before it is made.
func (r Route) check() error {
	switch {
	case !r.Dst.IsValid() || r.Kind >= nKinds:
		return fmt.Errorf("%v: no destination or no kind", r)
	case r.Gw.IsValid() && (r.Gw.Is4() != r.Dst.Addr().Is4() || r.Gw.Is4In6()):
		return fmt.Errorf("%v: destination and gateway must be of one family", r)
	case (r.Kind == KindVXLAN || r.Kind == KindIPIP || r.Kind == KindLearned) && !r.Gw.IsValid():
		return fmt.Errorf("%v: no gateway", r)
	case (r.Kind == KindEndpoint || r.Kind == KindWireGuard || r.Kind == KindVXLAN || r.Kind == KindIPIP) && r.Link <= 0:
		return fmt.Errorf("%v: no link", r)
	case r.Kind == KindWireGuard && r.Gw.IsValid():
		return fmt.Errorf("%v: a WireGuard route has no gateway", r)
	}
	return nil
}

// Unset drops the claims of kind on dsts; the next claim of another kind
// takes the destination, or the route goes.
func (t *Table) Unset(kind Kind, dsts ...netip.Prefix) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ops []op
	for _, d := range dsts {
		if c := t.claims[d.Masked()]; c == nil || c.by[kind] == nil {
			continue // nothing to let go of (BGP withdraws what it may never have claimed)
		}
		ops = t.change(ops, d.Masked(), func(c *claims) { c.by[kind] = nil })
	}
	return t.dp.writeRoutes(ops)
}

// Sync makes the claims of kind exactly want, and marks the kind complete:
// the first time, routes of that kind a previous run left are removed.
func (t *Table) Sync(kind Kind, want []Route) error {
	t.mu.Lock()
	keep := map[netip.Prefix]Route{}
	var errs []error
	for _, r := range want {
		r.Kind = kind
		if err := r.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Dst = r.Dst.Masked()
		keep[r.Dst] = r
	}
	var ops []op
	for dst, c := range t.claims {
		if _, ok := keep[dst]; !ok && c.by[kind] != nil {
			ops = t.change(ops, dst, func(c *claims) { c.by[kind] = nil })
		}
	}
	for dst, r := range keep {
		if old := t.claims[dst]; old == nil || old.by[kind] == nil || *old.by[kind] != r {
			ops = t.change(ops, dst, func(c *claims) { c.by[kind] = &r })
		}
	}
	err := errors.Join(append(errs, t.dp.writeRoutes(ops))...)
	t.mu.Unlock()
	return errors.Join(err, t.MarkSynced(kind))
}

// MarkSynced says kind's claims are complete without changing them (BGP,
// once a restarted speaker's peers have had time to announce again).
func (t *Table) MarkSynced(kind Kind) error {
	t.mu.Lock()
	first := !t.synced[kind]
	t.synced[kind] = true
	t.mu.Unlock()
	if !first {
		return nil
	}
	_, err := t.Repair()
	return err
}

// change applies edit to dst's claims and appends the kernel operation,
// if any, that the new winner needs. Callers hold t.mu.
func (t *Table) change(ops []op, dst netip.Prefix, edit func(*claims)) []op {
	c := t.claims[dst]
	if c == nil {
		c = &claims{}
		t.claims[dst] = c
	}
	before, had := c.winner()
	was := c.by
	edit(c)
	for k := range c.by {
		switch {
		case was[k] == nil && c.by[k] != nil:
			t.claimed[k]++
		case was[k] != nil && c.by[k] == nil:
			t.claimed[k]--
		}
	}
	t.gen++
	c.gen = t.gen
	after, has := c.winner()
	switch {
	case !has:
		delete(t.claims, dst)
		if had {
			ops = append(ops, op{r: before, del: true})
		}
	case !had || before != after:
		ops = append(ops, op{r: after})
	}
	return ops
}

// forgetLink drops the claims on a deleted link (the kernel removed their
// routes with it) and writes what wins those destinations now.
func (t *Table) forgetLink(index int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ops []op
	for dst, c := range t.claims {
		before, _ := c.winner()
		for k, r := range c.by {
			if r != nil && r.Link == index {
				c.by[k] = nil
				t.claimed[k]--
			}
		}
		if w, ok := c.winner(); !ok {
			delete(t.claims, dst)
		} else if w != before {
			t.gen++
			c.gen = t.gen
			ops = append(ops, op{r: w})
		}
	}
	return t.dp.writeRoutes(ops)
}

// Repair makes the kernel's tabby routes match the winning claims: a
// missing or changed one is written again, one nobody claims is removed
// once its kind is complete. It returns how many routes it wrote or removed.
func (t *Table) Repair() (int, error) {
	t.mu.Lock()
	listed := t.gen
	t.mu.Unlock()
	have, err := t.dp.tabbyRoutes()
	if err != nil {
		return 0, err
	}
	tun := t.dp.tunnelKinds()
	t.mu.Lock()
	var ops []op
	seen := make(map[netip.Prefix]bool, len(have))
	for _, r := range have {
		dst := r.dst
		seen[dst] = true
		if c := t.claims[dst]; c != nil {
			if w, _ := c.winner(); c.gen <= listed && !matches(r, w, tun) {
				ops = append(ops, op{r: w})
			}
			continue
		}
		if k := classify(r, tun); t.synced[k] {
			ops = append(ops, op{r: Route{Kind: k, Dst: dst}, del: true})
		}
	}
	for dst, c := range t.claims {
		if w, ok := c.winner(); ok && !seen[dst] && c.gen <= listed {
			ops = append(ops, op{r: w})
		}
	}
	// Written under the lock: a claim changed meanwhile would otherwise be
	// overwritten by the winner this pass saw.
	defer t.mu.Unlock()
	return len(ops), t.dp.writeRoutes(ops)
}

// RemoveAll drops every claim of kind and removes every route of that kind
// from the kernel, claimed or not (uninstall).
func (t *Table) RemoveAll(kind Kind) error {
	t.mu.Lock()
	var ops []op
	for dst, c := range t.claims {
		if c.by[kind] != nil {
			ops = t.change(ops, dst, func(c *claims) { c.by[kind] = nil })
		}
	}
	err := t.dp.writeRoutes(ops)
	t.mu.Unlock()
	have, lerr := t.dp.tabbyRoutes()
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	tun := t.dp.tunnelKinds()
	ops = ops[:0]
	for _, r := range have {
		if classify(r, tun) == kind {
			ops = append(ops, op{r: Route{Kind: kind, Dst: r.dst}, del: true})
		}
	}
	return errors.Join(err, t.dp.writeRoutes(ops))
}

// Protected lists what a learned route must not cover (other protocols'
// routes, tabby's blackholes) or replace (endpoint routes, which a block of
// another host legitimately covers when an address of it was borrowed):
// from the claims and the followed routes, or, before Follow follows, from
// the kernel (Dataplane.Protected).
func (t *Table) Protected() (noCover, noReplace []netip.Prefix, err error) {
	noCover, ok := t.others.prefixes()
	if !ok {
		return t.dp.Protected()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for dst, c := range t.claims {
		w, ok := c.winner()
		switch {
		case !ok:
		case w.Kind == KindEndpoint:
			noReplace = append(noReplace, dst)
		case w.Kind == KindBlackhole:
			noCover = append(noCover, dst)
		}
	}
	return noCover, noReplace, nil
}

// prefixOf reads a kernel route's destination.
func prefixOf(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	ones, _ := r.Dst.Mask.Size()
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// classify says which kind wrote a tabby route found in the kernel.
func classify(r kroute, tun map[int]Kind) Kind {
	switch {
	case r.blackhole:
		return KindBlackhole
	case tun[r.link] != 0:
		return tun[r.link]
	case r.gw.IsValid():
		return KindLearned
	}
	return KindEndpoint
}

// matches reports whether the kernel's route is what claim w asks for.
func matches(r kroute, w Route, tun map[int]Kind) bool {
	if classify(r, tun) != w.Kind {
		return false
	}
	switch w.Kind {
	case KindBlackhole:
		return true
	case KindEndpoint:
		return r.link == w.Link && !r.gw.IsValid()
	case KindLearned:
		return r.gw == w.Gw
	}
	return r.link == w.Link && r.gw == w.Gw
}

// Learn claims BGP's routes dst[i] via gw[i] (bgp.Routes).
func (t *Table) Learn(dst []netip.Prefix, gw []netip.Addr) error {
	if len(dst) != len(gw) {
		return fmt.Errorf("learn: %d destinations, %d gateways", len(dst), len(gw))
	}
	rs := make([]Route, len(dst))
	for i := range dst {
		rs[i] = Route{Kind: KindLearned, Dst: dst[i], Gw: gw[i]}
	}
	return t.Set(rs...)
}

// Unlearn drops BGP's claims on dst (bgp.Routes).
func (t *Table) Unlearn(dst ...netip.Prefix) error { return t.Unset(KindLearned, dst...) }

// Learned counts the destinations BGP claims (bgp.Routes).
func (t *Table) Learned() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.claimed[KindLearned]
}

// LearnedSynced says BGP has claimed all it learned since it started: a
// route a previous run learned that no peer announced again goes.
func (t *Table) LearnedSynced() error { return t.MarkSynced(KindLearned) }
