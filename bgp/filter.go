package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/tabbynet/tabby/datastore"
)

// ValidateFilter checks a BGPFilter, naming the bad field: every rule has
// action Accept or Reject, matchOperator In, NotIn, Equal or NotEqual, and
// a CIDR of its list's family.
func ValidateFilter(f datastore.BGPFilter) error {
	for _, list := range []struct {
		field string
		rules []datastore.FilterRule
		v6    bool
	}{{"importV4", f.ImportV4, false}, {"importV6", f.ImportV6, true}, {"exportV4", f.ExportV4, false}, {"exportV6", f.ExportV6, true}} {
		for i, r := range list.rules {
			at := fmt.Sprintf("BGPFilter %s: spec.%s[%d]", f.Name, list.field, i)
			if r.Action != "Accept" && r.Action != "Reject" {
				return fmt.Errorf("%s.action %q must be Accept or Reject", at, r.Action)
			}
			switch r.MatchOperator {
			case "In", "NotIn", "Equal", "NotEqual":
			default:
				return fmt.Errorf("%s.matchOperator %q must be In, NotIn, Equal or NotEqual", at, r.MatchOperator)
			}
			p, err := netip.ParsePrefix(r.CIDR)
			if err != nil || p.Addr().Is6() != list.v6 || p.Addr().Is4In6() {
				family := "IPv4"
				if list.v6 {
					family = "IPv6"
				}
				return fmt.Errorf("%s.cidr %q must be an %s CIDR", at, r.CIDR, family)
			}
		}
	}
	return nil
}

// filterStatements turns the filters each external peer names into GoBGP
// statements, import and export apart, peer by peer and rule by rule in
// order, with the defined sets they use (named with gen, so a rebuild never
// meets the sets in use). Export statements match this host's own paths
// only: a rule may withhold one, never add a learned route.
func filterStatements(gen int, peers map[netip.Addr]PeerSpec, filters map[string]datastore.BGPFilter) (imp, exp []*api.Statement, sets []*api.DefinedSet) {
	var addrs []netip.Addr
	for a, p := range peers {
		if p.Type != TypeMesh && p.Type != TypeReflector && len(p.Filters) > 0 {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	n := 0
	for i, a := range addrs {
		ns := fmt.Sprintf("tabby-g%d-peer%d", gen, i)
		sets = append(sets, neighborSet(ns, []string{netip.PrefixFrom(a, a.BitLen()).String()}))
		for _, name := range peers[a].Filters {
			f, ok := filters[name]
			if !ok {
				continue // named but missing: it accepts nothing
			}
			for _, list := range []struct {
				rules  []datastore.FilterRule
				afi    api.Family_Afi
				export bool
			}{{f.ImportV4, api.Family_AFI_IP, false}, {f.ImportV6, api.Family_AFI_IP6, false},
				{f.ExportV4, api.Family_AFI_IP, true}, {f.ExportV6, api.Family_AFI_IP6, true}} {
				for _, r := range list.rules {
					st, ds, ok := ruleStatement(gen, n, ns, r, list.afi)
					if !ok {
						continue
					}
					n++
					sets = append(sets, ds)
					if list.export {
						st.Conditions.RouteType = api.Conditions_ROUTE_TYPE_LOCAL
						exp = append(exp, st)
					} else {
						imp = append(imp, st)
					}
				}
			}
		}
	}
	return imp, exp, sets
}

// ruleStatement is one rule as a statement for the peers of neighbor set
// ns, with the prefix set it matches.
func ruleStatement(gen, n int, ns string, r datastore.FilterRule, afi api.Family_Afi) (*api.Statement, *api.DefinedSet, bool) {
	p, err := netip.ParsePrefix(r.CIDR)
	if err != nil {
		return nil, nil, false
	}
	p = p.Masked()
	ps := fmt.Sprintf("tabby-g%d-rule%d", gen, n)
	max := uint32(p.Addr().BitLen())
	if strings.HasSuffix(r.MatchOperator, "Equal") {
		max = uint32(p.Bits())
	}
	ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: ps,
		Prefixes: []*api.Prefix{{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: max}}}
	match := api.MatchSet_ANY
	if strings.HasPrefix(r.MatchOperator, "Not") {
		match = api.MatchSet_INVERT
	}
	action := api.RouteAction_ACCEPT
	if r.Action == "Reject" {
		action = api.RouteAction_REJECT
	}
	return &api.Statement{Name: ps, Conditions: &api.Conditions{
		NeighborSet: &api.MatchSet{Name: ns, Type: api.MatchSet_ANY},
		PrefixSet:   &api.MatchSet{Name: ps, Type: match},
		AfiSafiIn:   []*api.Family{{Afi: afi, Safi: api.Family_SAFI_UNICAST}},
	}, Actions: &api.Actions{RouteAction: action}}, ds, true
}

// filterSignature is what a rebuild of the filter policy depends on.
func filterSignature(imp, exp []*api.Statement, sets []*api.DefinedSet) string {
	var b strings.Builder
	for i, stmts := range [][]*api.Statement{imp, exp} {
		for _, st := range stmts {
			fmt.Fprintf(&b, "%d|%s|%v|%v;", i, st.Conditions.PrefixSet.Type, st.Actions.RouteAction, st.Conditions.AfiSafiIn[0].Afi)
		}
	}
	for _, ds := range sets {
		fmt.Fprintf(&b, "%v", ds.List)
		for _, p := range ds.Prefixes { // by value: %v of the pointers would differ every build
			fmt.Fprintf(&b, "%s:%d-%d,", p.IpPrefix, p.MaskLengthMin, p.MaskLengthMax)
		}
		b.WriteString(";")
	}
	return b.String()
}

// syncFilters rebuilds the policies of the external peers' filters when
// they changed: the new generation is built beside the one in force,
// assigned, and only then is the old one removed, so the change never
// opens more than either side of it. It reports whether it changed.
func (s *Speaker) syncFilters(ctx context.Context, peers map[netip.Addr]PeerSpec, filters map[string]datastore.BGPFilter) (bool, error) {
	// Built for the next generation; the signature leaves names out, so it
	// compares with the one in force.
	gen := s.filterGen + 1
	imp, exp, sets := filterStatements(gen, peers, filters)
	sig := filterSignature(imp, exp, sets)
	if s.filterDone && sig == s.filterSig {
		return false, nil
	}
	oldImp, oldExp, oldSets := s.filterPolicy, s.filterExport, s.filterSets
	s.filterGen, s.filterSig, s.filterSets, s.filterDone = gen, sig, nil, true
	s.filterPolicy, s.filterExport = "", ""
	for _, ds := range sets {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return true, fmt.Errorf("BGP filter set %s: %w", ds.Name, err)
		}
		s.filterSets = append(s.filterSets, ds)
	}
	if len(imp) > 0 {
		// A pool's prefixes never come from an external peer by its
		// filters: only the owner policy, before them, takes those.
		guard := []*api.Statement{}
		for i, set := range []string{setPools4, setPools6} {
			guard = append(guard, &api.Statement{Name: fmt.Sprintf("tabby-g%d-nopools%d", gen, i), Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Name: setExternal, Type: api.MatchSet_ANY}, PrefixSet: &api.MatchSet{Name: set, Type: api.MatchSet_ANY}},
				Actions: &api.Actions{RouteAction: api.RouteAction_REJECT}})
		}
		pol := &api.Policy{Name: fmt.Sprintf("tabby-filters-g%d", gen), Statements: append(guard, imp...)}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return true, fmt.Errorf("BGP filter policy: %w", err)
		}
		s.filterPolicy = pol.Name
	}
	if len(exp) > 0 {
		pol := &api.Policy{Name: fmt.Sprintf("tabby-filters-out-g%d", gen), Statements: exp}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return true, fmt.Errorf("BGP filter policy: %w", err)
		}
		s.filterExport = pol.Name
	}
	if err := s.assign(ctx, api.PolicyDirection_IMPORT); err != nil {
		return true, err
	}
	if err := s.assign(ctx, api.PolicyDirection_EXPORT); err != nil {
		return true, err
	}
	for _, old := range []string{oldImp, oldExp} {
		if old == "" {
			continue
		}
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: old}, All: true}); err != nil {
			s.log.Debug("delete old filter policy", "policy", old, "err", err)
		}
	}
	for _, ds := range oldSets {
		if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: ds.DefinedType, Name: ds.Name}, All: true}); err != nil {
			s.log.Debug("delete old filter set", "set", ds.Name, "err", err)
		}
	}
	return true, nil
}

// validFilters reads the BGPFilters; one that does not validate is left
// out, loudly (its peers then accept nothing of it).
func (s *Speaker) validFilters(ctx context.Context) map[string]datastore.BGPFilter {
	fs := datastore.ViewList[datastore.BGPFilter](s.view, datastore.BGPFiltersDir)
	out := map[string]datastore.BGPFilter{}
	for _, f := range fs {
		if err := ValidateFilter(f); err != nil {
			s.log.Warn("BGPFilter ignored", "err", err)
			continue
		}
		out[f.Name] = f
	}
	return out
}
