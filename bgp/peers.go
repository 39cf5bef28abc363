// Package bgp is tabby's in-process BGP speaker (GoBGP v3, the only package
// that imports it). It peers with the other hosts (node-to-node mesh or route
// reflectors) and with BGPPeer resources, advertises the blocks this host owns
// and its borrowed addresses, and installs what it learns as kernel routes.
package bgp

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// Peer types, as `tabby node status` prints them.
const (
	TypeMesh      = "node-to-node mesh"
	TypeGlobal    = "global"
	TypeNode      = "node specific"
	TypeReflector = "route reflector"
)

// PeerSpec is one BGP session this host wants.
type PeerSpec struct {
	Address  netip.Addr
	ASN      uint32
	Type     string
	Password string
	// RRClient makes the peer a client of this host, the reflector.
	RRClient  bool
	ClusterID string
	// Passive: wait for the peer to connect. Of two tabby hosts only the
	// one with the lower address connects, so a restarting host and its
	// peer never reject each other's attempts (GoBGP closes connections
	// that arrive while a session is idle, and a failed attempt ends the
	// graceful restart of the peer, dropping the routes it kept).
	Passive bool
	// HoldTime is the session's hold time in seconds.
	HoldTime uint32
	// Filters name the BGPFilters of an external peer.
	Filters []string
}

// NodeAddr returns a node's IPv4 address (stored as address/prefix).
func NodeAddr(n datastore.Node) (netip.Addr, bool) { return nodeAddr(n, 4) }

// nodeAddr returns a node's address of family 4 or 6.
func nodeAddr(n datastore.Node, family int) (netip.Addr, bool) {
	s := n.IPv4
	if family == 6 {
		s = n.IPv6
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4() == (family == 4)
}

// DesiredPeers computes the sessions of node me, per address family (IPv6
// sessions between the nodes' IPv6 addresses carry IPv6 routes, as Calico's
// BIRD and BIRD6 do): the full mesh when it is on; with it off, reflectors
// peer with every node (non-reflectors as their clients) and the others peer
// only with reflectors; plus global BGPPeers and those for this node.
func DesiredPeers(me string, nodes []datastore.Node, peers []datastore.BGPPeer, cfg datastore.BGPConfiguration) map[netip.Addr]PeerSpec {
	out := map[netip.Addr]PeerSpec{}
	var self datastore.Node
	for _, n := range nodes {
		if n.Name == me {
			self = n
		}
	}
	for _, family := range []int{4, 6} {
		if selfAddr, ok := nodeAddr(self, family); ok {
			addPeers(out, me, self, selfAddr, family, nodes, peers, cfg)
		}
	}
	return out
}

// addPeers adds the sessions of one address family to out.
func addPeers(out map[netip.Addr]PeerSpec, me string, self datastore.Node, selfAddr netip.Addr, family int,
	nodes []datastore.Node, peers []datastore.BGPPeer, cfg datastore.BGPConfiguration) {
	asOf := func(n datastore.Node) uint32 {
		if n.ASNumber != 0 {
			return n.ASNumber
		}
		return cfg.AS()
	}
	sorted := append([]datastore.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, n := range sorted {
		addr, ok := nodeAddr(n, family)
		if n.Name == me || !ok || addr == selfAddr {
			continue
		}
		passive := selfAddr.Compare(addr) > 0
		switch {
		case cfg.MeshEnabled():
			out[addr] = PeerSpec{Address: addr, ASN: asOf(n), Type: TypeMesh, Passive: passive}
		case self.RouteReflectorClusterID != "":
			// A reflector: other reflectors are plain peers, the rest clients.
			spec := PeerSpec{Address: addr, ASN: asOf(n), Type: TypeReflector, Passive: passive}
			if n.RouteReflectorClusterID == "" {
				spec.RRClient, spec.ClusterID = true, self.RouteReflectorClusterID
			}
			out[addr] = spec
		case n.RouteReflectorClusterID != "":
			out[addr] = PeerSpec{Address: addr, ASN: asOf(n), Type: TypeReflector, Passive: passive}
		}
	}
	for _, p := range peers {
		addr, err := netip.ParseAddr(p.PeerIP)
		if err != nil || addr.Is4() != (family == 4) || addr == selfAddr || (p.Node != "" && p.Node != me) {
			continue
		}
		typ := TypeGlobal
		if p.Node != "" {
			typ = TypeNode
		}
		asn := p.ASNumber
		if asn == 0 {
			asn = cfg.AS()
		}
		out[addr] = PeerSpec{Address: addr, ASN: asn, Type: typ, Password: p.Password, Filters: p.Filters}
	}
}
