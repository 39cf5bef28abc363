package bgp

import (
	"context"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
)

// onBest installs or removes the kernel route for one best-path change.
// It decodes only the prefix and the next hop: this runs once per learned
// route, and full attribute decoding dominated the install rate.
func (s *Speaker) onBest(p *api.Path) {
	var pfx api.IPAddressPrefix
	if err := p.GetNlri().UnmarshalTo(&pfx); err != nil {
		return
	}
	a, err := netip.ParseAddr(pfx.Prefix)
	if err != nil {
		return
	}
	prefix := netip.PrefixFrom(a, int(pfx.PrefixLen))
	var nh netip.Addr
	var nha api.NextHopAttribute
	var mp api.MpReachNLRIAttribute
	for _, attr := range p.GetPattrs() {
		switch {
		case a.Is4() && attr.MessageIs(&nha) && attr.UnmarshalTo(&nha) == nil:
			nh, _ = netip.ParseAddr(nha.NextHop)
		case a.Is6() && attr.MessageIs(&mp) && attr.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0:
			// The first next hop is the global one (a link-local may follow).
			nh, _ = netip.ParseAddr(mp.NextHops[0])
		}
	}
	from, _ := netip.ParseAddr(p.GetNeighborIp())
	s.installs <- install{prefix: prefix, nh: nh, withdraw: p.IsWithdraw, from: from.Unmap()}
}

// install is one kernel change decided by a best-path event.
type install struct {
	prefix   netip.Prefix
	nh       netip.Addr
	withdraw bool
	from     netip.Addr // the peer it came from
}

// protected is what a learned route may neither cover nor replace
// (noCover: the host's blocks, connected subnets, default route, other
// daemons' routes) or not replace (noReplace: its endpoints, which another
// host's block covers when an address was borrowed from it).
type protected struct{ noCover, noReplace []netip.Prefix }

// refuse says why a learned route must not reach the kernel ("" when it
// may): a node (mesh or reflector) announces only prefixes inside enabled
// pools, and no route may cover or replace what is protected.
func (s *Speaker) refuse(in install, prot protected) string {
	if spec, ok := s.peers[in.from]; ok && (spec.Type == TypeMesh || spec.Type == TypeReflector) {
		inPool := false
		for _, p := range s.pools {
			if p.Bits() <= in.prefix.Bits() && p.Contains(in.prefix.Addr()) {
				inPool = true
				break
			}
		}
		if !inPool {
			return "a node announced a prefix outside every enabled pool"
		}
	}
	for _, p := range prot.noCover {
		if in.prefix.Bits() <= p.Bits() && in.prefix.Contains(p.Addr()) {
			return "it covers or replaces the host's route " + p.String()
		}
	}
	for _, p := range prot.noReplace {
		if in.prefix == p {
			return "it replaces the route of the host's endpoint " + p.String()
		}
	}
	return ""
}

// retryRefused runs the routes refused so far through the checks again
// (pools or peers changed, or the host's routes did).
func (s *Speaker) retryRefused() {
	s.mu.Lock()
	batch := make([]install, 0, len(s.refused))
	for _, in := range s.refused {
		batch = append(batch, in)
	}
	s.mu.Unlock()
	if len(batch) > 0 {
		s.applyBatch(batch)
	}
}

// runInstaller applies best-path changes to the kernel in arrival order. It
// runs apart from GoBGP's event callback, so BGP keeps decoding while the
// kernel is programmed, and it takes whatever has queued up as one batch.
func (s *Speaker) runInstaller(ctx context.Context) {
	batch := make([]install, 0, 1024)
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-s.installs:
			batch = append(batch[:0], in)
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case in := <-s.installs:
				batch = append(batch, in)
			default:
				break more
			}
		}
		s.applyBatch(batch)
	}
}

// applyBatch installs runs of new routes in one batched kernel call each and
// removes withdrawn ones in between, keeping the order of the changes.
func (s *Speaker) applyBatch(batch []install) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var dst []netip.Prefix
	var gw []netip.Addr
	var prot protected
	listed := false
	flush := func() {
		if len(dst) == 0 {
			return
		}
		if err := s.routes.Learn(dst, gw); err != nil {
			s.log.Warn("install learned routes failed", "routes", len(dst), "err", err)
		}
		dst, gw = dst[:0], gw[:0]
	}
	for _, in := range batch {
		_, again := s.refused[in.prefix] // a retry: said once already
		delete(s.refused, in.prefix)
		if !in.withdraw && in.nh.IsValid() && in.nh != s.cfg.RouterID && in.nh != s.cfg.IPv6 {
			if !listed {
				var err error
				if prot.noCover, prot.noReplace, err = s.routes.Protected(); err != nil {
					s.log.Warn("list the host's routes; learned routes wait", "err", err)
					prot = protected{noCover: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}} // refuse all
				}
				listed = true
			}
			if why := s.refuse(in, prot); why != "" {
				s.refused[in.prefix] = in
				if again {
					s.log.Debug("learned route still refused", "prefix", in.prefix.String(), "peer", in.from.String(), "why", why)
				} else {
					s.log.Warn("learned route refused", "prefix", in.prefix.String(), "peer", in.from.String(), "why", why)
				}
				in.withdraw = true
			}
		}
		if !in.withdraw && in.nh.IsValid() && in.nh != s.cfg.RouterID && in.nh != s.cfg.IPv6 {
			dst, gw = append(dst, in.prefix), append(gw, in.nh)
			continue
		}
		// Withdrawn, or our own path: no route via anyone for it (the
		// table, which keeps what BGP claims, lets go of a claim it has).
		flush()
		if err := s.routes.Unlearn(in.prefix); err != nil {
			s.log.Warn("remove learned route failed", "prefix", in.prefix.String(), "err", err)
		}
	}
	flush()
}
