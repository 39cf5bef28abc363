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

// The owner policy: a prefix inside the pools is accepted from whichever
// neighbor sends it (a mesh peer, a reflector, an external reflector) only
// when IPAM grants it to a node and the path's next hop is that node's
// address. Another node cannot take a block or a container's address over,
// and a path that would send the traffic anywhere but its owner is never
// taken. One statement per node and family, each with a prefix set of the
// node's grants (blocks side by side merged: ownerEntries), kept entry by
// entry (a claim changes an entry or a few); the
// statements are rebuilt, as a new generation, only when the nodes or their
// addresses change.

// ownerHop is what a node's statements match on.
type ownerHop struct {
	name   string
	v4, v6 netip.Addr
}

func ownerSetName(node string, v6 bool) string {
	if v6 {
		return "tabby-own-" + node + "-v6"
	}
	return "tabby-own-" + node + "-v4"
}

// ownerHops lists the other nodes whose grants are accepted.
func ownerHops(me string, nodes []datastore.Node) []ownerHop {
	var out []ownerHop
	for _, n := range nodes {
		if n.Name == me || !datastore.ValidName(n.Name) {
			continue
		}
		h := ownerHop{name: n.Name}
		h.v4, _ = nodeAddr(n, 4)
		h.v6, _ = nodeAddr(n, 6)
		if h.v4.IsValid() || h.v6.IsValid() {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b ownerHop) int { return strings.Compare(a.name, b.name) })
	return out
}

func ownerSignature(hops []ownerHop) string {
	var b strings.Builder
	for _, h := range hops {
		fmt.Fprintf(&b, "%s|%s|%s;", h.name, h.v4, h.v6)
	}
	return b.String()
}

// syncOwners brings the owner sets and policy up to date: sets of new nodes
// first, entries of the nodes whose grants changed (every node's when all),
// then a new generation of statements when the nodes changed. The peers
// that may carry a changed node's paths are soft-reset inbound, so paths
// refused before the grant arrived are judged again.
func (s *Speaker) syncOwners(ctx context.Context, nodes []datastore.Node, all bool) error {
	hops := ownerHops(s.cfg.Node, nodes)
	dirty := map[string]bool{}
	for _, n := range s.own.takeDirty() {
		dirty[n] = true
	}
	for _, h := range hops {
		if _, ok := s.ownHave[h.name]; ok {
			continue
		}
		for _, v6 := range []bool{false, true} {
			if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ownerSet(h.name, v6, nil)}); err != nil {
				return fmt.Errorf("BGP owner set of %s: %w", h.name, err)
			}
		}
		s.ownHave[h.name] = map[ownerEntry]bool{}
		dirty[h.name] = true
	}
	var changed []string
	for name, have := range s.ownHave {
		if !all && !dirty[name] {
			continue
		}
		var want []netip.Prefix
		for _, p := range s.own.of(name) {
			if s.inPools(p) {
				want = append(want, p)
			}
		}
		n, err := s.writeOwnerSet(ctx, name, have, want)
		if err != nil {
			return err
		}
		if n > 0 {
			changed = append(changed, name)
		}
	}
	sig := ownerSignature(hops)
	if sig != s.ownSig {
		if err := s.rebuildOwnerPolicy(ctx, hops); err != nil {
			return err
		}
		s.ownSig = sig
		// Nodes came or went (rare): every session is judged again.
		s.softReset(ctx, api.ResetPeerRequest_IN, "nodes changed", nil)
		return nil
	}
	s.resetCarriers(ctx, changed, nodes)
	return nil
}

func ownerSet(node string, v6 bool, es []ownerEntry) *api.DefinedSet {
	ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: ownerSetName(node, v6)}
	if es == nil { // each set keeps an entry no route has: an empty set matches all
		p := noPrefix4
		if v6 {
			p = noPrefix6
		}
		es = []ownerEntry{{p, uint8(p.Bits())}}
	}
	for _, e := range es {
		ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: e.P.String(), MaskLengthMin: uint32(e.Len), MaskLengthMax: uint32(e.Len)})
	}
	return ds
}

// writeOwnerSet moves one node's sets from have to the entries granting
// want; it returns how many entries changed.
func (s *Speaker) writeOwnerSet(ctx context.Context, node string, have map[ownerEntry]bool, want []netip.Prefix) (int, error) {
	var fams [2][]netip.Prefix
	for _, p := range want {
		if p.Addr().Is6() {
			fams[1] = append(fams[1], p)
		} else {
			fams[0] = append(fams[0], p)
		}
	}
	wanted := map[ownerEntry]bool{}
	var add, del [2][]ownerEntry
	for f := range 2 {
		for _, e := range ownerEntries(fams[f]) {
			wanted[e] = true
			if !have[e] {
				add[f] = append(add[f], e)
			}
		}
	}
	for e := range have {
		if !wanted[e] {
			f := 0
			if e.P.Addr().Is6() {
				f = 1
			}
			del[f] = append(del[f], e)
		}
	}
	n := 0
	for f := range 2 {
		if len(add[f]) > 0 {
			if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ownerSet(node, f == 1, add[f])}); err != nil {
				return n, fmt.Errorf("BGP owner set of %s: %w", node, err)
			}
			for _, e := range add[f] {
				have[e] = true
			}
		}
		if len(del[f]) > 0 {
			if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: ownerSet(node, f == 1, del[f])}); err != nil {
				return n, fmt.Errorf("BGP owner set of %s: %w", node, err)
			}
			for _, e := range del[f] {
				delete(have, e)
			}
		}
		n += len(add[f]) + len(del[f])
	}
	return n, nil
}

// rebuildOwnerPolicy installs the statements for hops as a new generation,
// assigns it, then removes the old one and the sets of nodes gone.
func (s *Speaker) rebuildOwnerPolicy(ctx context.Context, hops []ownerHop) error {
	gen := s.ownGen + 1
	pol := &api.Policy{Name: fmt.Sprintf("tabby-owners-g%d", gen)}
	for i, h := range hops {
		for _, f := range []struct {
			hop netip.Addr
			v6  bool
			afi api.Family_Afi
		}{{h.v4, false, api.Family_AFI_IP}, {h.v6, true, api.Family_AFI_IP6}} {
			if !f.hop.IsValid() {
				continue // an empty next-hop list would match every path
			}
			pol.Statements = append(pol.Statements, &api.Statement{
				Name: fmt.Sprintf("tabby-owners-g%d-n%d-%v", gen, i, f.afi),
				Conditions: &api.Conditions{
					PrefixSet:     &api.MatchSet{Name: ownerSetName(h.name, f.v6), Type: api.MatchSet_ANY},
					NextHopInList: []string{netip.PrefixFrom(f.hop, f.hop.BitLen()).String()},
					AfiSafiIn:     []*api.Family{{Afi: f.afi, Safi: api.Family_SAFI_UNICAST}},
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			})
		}
	}
	if len(pol.Statements) > 0 {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return fmt.Errorf("BGP owner policy: %w", err)
		}
	}
	oldName := s.ownPolicy
	s.ownGen, s.ownPolicy = gen, ""
	if len(pol.Statements) > 0 {
		s.ownPolicy = pol.Name
	}
	if err := s.assign(ctx, api.PolicyDirection_IMPORT); err != nil {
		return err
	}
	if oldName != "" {
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: oldName}, All: true}); err != nil {
			s.log.Debug("delete old owner policy", "policy", oldName, "err", err)
		}
	}
	keep := map[string]bool{}
	for _, h := range hops {
		keep[h.name] = true
	}
	for name := range s.ownHave {
		if keep[name] {
			continue
		}
		for _, v6 := range []bool{false, true} {
			ds := &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: ownerSetName(name, v6)}
			if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: ds, All: true}); err != nil {
				s.log.Debug("delete owner set", "set", ds.Name, "err", err)
			}
		}
		delete(s.ownHave, name)
	}
	return nil
}

// assign sets one direction's chain. Import: the owner policy, the
// external peers' filters, the base policy; what none accepts is
// rejected. Export: the external peers' export filters, then the base
// policy (our own paths to all, nothing learned to external peers).
func (s *Speaker) assign(ctx context.Context, dir api.PolicyDirection) error {
	names, def := []string{s.ownPolicy, s.filterPolicy, "tabby-import"}, api.RouteAction_REJECT
	if dir == api.PolicyDirection_EXPORT {
		names, def = []string{s.filterExport, "tabby-export"}, api.RouteAction_ACCEPT
	}
	var pols []*api.Policy
	for _, n := range names {
		if n != "" {
			pols = append(pols, &api.Policy{Name: n})
		}
	}
	err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: dir, Policies: pols, DefaultAction: def}})
	if err != nil {
		return fmt.Errorf("BGP %v policy: %w", dir, err)
	}
	return nil
}

// inPools reports whether p lies inside an enabled pool.
func (s *Speaker) inPools(p netip.Prefix) bool {
	for _, pool := range s.pools {
		if pool.Bits() <= p.Bits() && pool.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// resetCarriers soft-resets inbound the sessions that may carry the named
// nodes' paths: the node itself, and every reflector of ours and external
// peer (which may reflect them); a reflector's clients send only their own.
func (s *Speaker) resetCarriers(ctx context.Context, names []string, nodes []datastore.Node) {
	if len(names) == 0 {
		return
	}
	direct := map[netip.Addr]bool{}
	for _, n := range nodes {
		if slices.Contains(names, n.Name) {
			for _, f := range []int{4, 6} {
				if a, ok := nodeAddr(n, f); ok {
					direct[a] = true
				}
			}
		}
	}
	s.softReset(ctx, api.ResetPeerRequest_IN, "a grant change", func(a netip.Addr, p PeerSpec) bool {
		reflects := (p.Type == TypeReflector && !p.RRClient) || p.Type == TypeGlobal || p.Type == TypeNode
		return direct[a] || reflects
	})
}

// softReset has the sessions that exist (those which pick, or all) judge
// again, in dir, what they received or sent.
func (s *Speaker) softReset(ctx context.Context, dir api.ResetPeerRequest_SoftResetDirection, why string, pick func(netip.Addr, PeerSpec) bool) {
	for a, p := range s.peers {
		if pick != nil && !pick(a, p) {
			continue
		}
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true, Direction: dir}); err != nil {
			s.log.Debug("BGP soft reset", "peer", a.String(), "after", why, "err", err)
		}
	}
}
