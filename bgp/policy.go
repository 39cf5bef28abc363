package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/tabbynet/tabby/datastore"
)

// GoBGP policy: what the speaker takes from peers before best-path
// selection, and what it tells them. Import, in order: the owner policy
// (ownerpolicy.go: a prefix inside the pools only as IPAM grants it, with
// its owner as next hop), the external peers' filters (never a prefix
// inside a pool), then the base policy here: our own paths; the rest is
// rejected. Export: the external peers' export filters, then our own paths
// to everyone and nothing learned to external peers (routes of one
// external peer never go to another, nor the other nodes' blocks); to
// nodes as BGP does (a reflector reflects). The sets are refreshed at
// every sync, and peers are soft-reset when they change, so the change
// applies to what was already received or sent.
const (
	setExternal = "tabby-external"
	setPools4   = "tabby-pools-v4"
	setPools6   = "tabby-pools-v6"
)

// policySets is the content of the defined sets.
type policySets struct {
	external       []string // external peers' addresses as /32 or /128
	pools4, pools6 []netip.Prefix
}

// Entries no peer or route has, that keep each set from being empty.
var (
	noNeighbor = "0.0.0.0/32"
	noPrefix4  = netip.MustParsePrefix("255.255.255.255/32")
	noPrefix6  = netip.MustParsePrefix("ff0f::1/128")
)

// policySetsFor derives the sets from the desired peers and enabled pools.
func policySetsFor(peers map[netip.Addr]PeerSpec, pools []netip.Prefix) policySets {
	var ps policySets
	for a, p := range peers {
		if p.Type != TypeMesh && p.Type != TypeReflector {
			ps.external = append(ps.external, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	for _, p := range pools {
		if p.Addr().Is4() {
			ps.pools4 = append(ps.pools4, p)
		} else {
			ps.pools6 = append(ps.pools6, p)
		}
	}
	slices.Sort(ps.external)
	byAddr := func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	}
	slices.SortFunc(ps.pools4, byAddr)
	slices.SortFunc(ps.pools6, byAddr)
	return ps
}

func (ps policySets) equal(o policySets) bool {
	return slices.Equal(ps.external, o.external) &&
		slices.Equal(ps.pools4, o.pools4) && slices.Equal(ps.pools6, o.pools6)
}

func neighborSet(name string, addrs []string) *api.DefinedSet {
	return &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: name, List: addrs}
}

func prefixSet(name string, pools []netip.Prefix) *api.DefinedSet {
	ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name}
	for _, p := range pools {
		ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen())})
	}
	return ds
}

// missing lists the entries of a that b lacks.
func missing[T comparable](a, b []T) []T {
	var out []T
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// writeSets moves the defined sets from have to want, entry by entry:
// GoBGP's policies hold the set objects, so a replaced set would go
// unseen; appended and removed entries are seen at once.
func (s *Speaker) writeSets(ctx context.Context, have, want policySets) error {
	var add, del []*api.DefinedSet
	if m := missing(want.external, have.external); len(m) > 0 {
		add = append(add, neighborSet(setExternal, m))
	}
	if m := missing(have.external, want.external); len(m) > 0 {
		del = append(del, neighborSet(setExternal, m))
	}
	for _, p := range []struct {
		name       string
		have, want []netip.Prefix
	}{{setPools4, have.pools4, want.pools4}, {setPools6, have.pools6, want.pools6}} {
		if m := missing(p.want, p.have); len(m) > 0 {
			add = append(add, prefixSet(p.name, m))
		}
		if m := missing(p.have, p.want); len(m) > 0 {
			del = append(del, prefixSet(p.name, m))
		}
	}
	for _, ds := range add {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("BGP policy set %s: %w", ds.Name, err)
		}
	}
	for _, ds := range del {
		if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("BGP policy set %s: %w", ds.Name, err)
		}
	}
	return nil
}

// installPolicy defines the sets (empty), the import and export policies,
// and assigns them; called once, before any peer exists.
func (s *Speaker) installPolicy(ctx context.Context) error {
	// Each set starts with an entry no peer or route has, and keeps it:
	// an empty neighbor set would match every neighbor.
	for _, ds := range []*api.DefinedSet{neighborSet(setExternal, []string{noNeighbor}),
		prefixSet(setPools4, []netip.Prefix{noPrefix4}), prefixSet(setPools6, []netip.Prefix{noPrefix6})} {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("BGP policy set %s: %w", ds.Name, err)
		}
	}
	match := func(name string, t api.MatchSet_Type) *api.MatchSet { return &api.MatchSet{Name: name, Type: t} }
	accept := &api.Actions{RouteAction: api.RouteAction_ACCEPT}
	reject := &api.Actions{RouteAction: api.RouteAction_REJECT}
	local := &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}
	imp := &api.Policy{Name: "tabby-import", Statements: []*api.Statement{
		{Name: "tabby-import-local", Conditions: local, Actions: accept},
		// External peers: what their BGPFilters accept (the filter policy,
		// assigned before this one), nothing else.
		{Name: "tabby-import-external", Conditions: &api.Conditions{NeighborSet: match(setExternal, api.MatchSet_ANY)}, Actions: reject},
	}}
	exp := &api.Policy{Name: "tabby-export", Statements: []*api.Statement{
		{Name: "tabby-export-local", Conditions: local, Actions: accept},
		{Name: "tabby-export-external", Conditions: &api.Conditions{NeighborSet: match(setExternal, api.MatchSet_ANY)}, Actions: reject},
	}}
	for _, p := range []*api.Policy{imp, exp} {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
			return fmt.Errorf("BGP policy %s: %w", p.Name, err)
		}
	}
	for _, a := range []*api.PolicyAssignment{
		{Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: imp.Name}}, DefaultAction: api.RouteAction_REJECT},
		{Name: "global", Direction: api.PolicyDirection_EXPORT, Policies: []*api.Policy{{Name: exp.Name}}, DefaultAction: api.RouteAction_ACCEPT},
	} {
		if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("BGP policy assignment %s: %w", a.Direction, err)
		}
	}
	return nil
}

// syncPolicy refreshes the sets for the desired peers and pools; when they
// changed, the peers that exist are soft-reset both ways, so what they sent
// and were sent is judged again.
func (s *Speaker) syncPolicy(ctx context.Context, peers map[netip.Addr]PeerSpec, filters map[string]datastore.BGPFilter) error {
	changed, err := s.syncFilters(ctx, peers, filters)
	if err != nil {
		return err
	}
	ps := policySetsFor(peers, s.pools)
	if !changed && s.policyDone && ps.equal(s.policySets) {
		return nil
	}
	if err := s.writeSets(ctx, s.policySets, ps); err != nil {
		return err
	}
	s.policySets, s.policyDone = ps, true
	s.softReset(ctx, api.ResetPeerRequest_BOTH, "a policy change", nil)
	return nil
}
