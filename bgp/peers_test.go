package bgp

import (
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

var nodes = []datastore.Node{
	{Name: "node00", IPv4: "10.0.0.10/24"},
	{Name: "node01", IPv4: "10.0.0.11/24"},
	{Name: "node02", IPv4: "10.0.0.12/24", RouteReflectorClusterID: "224.0.0.1"},
	{Name: "node03", IPv4: "10.0.0.13/24", ASNumber: 65003},
	{Name: "noaddr"},
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestMeshPeersWithEveryOtherNode(t *testing.T) {
	got := DesiredPeers("node00", nodes, nil, datastore.BGPConfiguration{})
	if len(got) != 3 {
		t.Fatalf("mesh of node00 = %v, want the 3 other nodes with addresses", got)
	}
	if p := got[addr("10.0.0.11")]; p.Type != TypeMesh || p.ASN != datastore.DefaultASNumber {
		t.Fatalf("node01 as mesh peer: %+v", p)
	}
	if p := got[addr("10.0.0.13")]; p.ASN != 65003 {
		t.Fatalf("node03's own AS must be used: %+v", p)
	}
}

func TestReflectorsWhenMeshIsOff(t *testing.T) {
	off := false
	cfg := datastore.BGPConfiguration{NodeToNodeMeshEnabled: &off, ASNumber: 64999}
	client := DesiredPeers("node00", nodes, nil, cfg)
	if len(client) != 1 || client[addr("10.0.0.12")].Type != TypeReflector || client[addr("10.0.0.12")].RRClient {
		t.Fatalf("a non-reflector peers only with the reflector, as a plain peer: %+v", client)
	}
	if client[addr("10.0.0.12")].ASN != 64999 {
		t.Fatalf("the configured AS must be used: %+v", client)
	}
	rr := DesiredPeers("node02", nodes, nil, cfg)
	if len(rr) != 3 {
		t.Fatalf("the reflector peers with every node: %+v", rr)
	}
	for _, a := range []string{"10.0.0.10", "10.0.0.11", "10.0.0.13"} {
		if p := rr[addr(a)]; !p.RRClient || p.ClusterID != "224.0.0.1" {
			t.Fatalf("%s should be a client of cluster 224.0.0.1: %+v", a, p)
		}
	}
}

func TestBGPPeersGlobalAndPerNode(t *testing.T) {
	peers := []datastore.BGPPeer{
		{Name: "tor", PeerIP: "10.0.0.254", ASNumber: 65000, Password: "s3cret"},
		{Name: "only01", PeerIP: "10.0.0.253", ASNumber: 65001, Node: "node01"},
		{Name: "self", PeerIP: "10.0.0.10"},
	}
	got := DesiredPeers("node00", nodes, peers, datastore.BGPConfiguration{})
	if p := got[addr("10.0.0.254")]; p.Type != TypeGlobal || p.ASN != 65000 || p.Password != "s3cret" {
		t.Fatalf("global peer: %+v", p)
	}
	if _, ok := got[addr("10.0.0.253")]; ok {
		t.Fatal("a peer for node01 must not be configured on node00")
	}
	if _, ok := got[addr("10.0.0.10")]; ok {
		t.Fatal("a host never peers with itself")
	}
	if p := DesiredPeers("node01", nodes, peers, datastore.BGPConfiguration{})[addr("10.0.0.253")]; p.Type != TypeNode {
		t.Fatalf("node specific peer on node01: %+v", p)
	}
}

// IPv6 sessions join nodes that both have an IPv6 address, beside the IPv4
// ones; a node without IPv6 has none, and IPv6 BGPPeers need it too.
func TestIPv6SessionsBesideIPv4(t *testing.T) {
	dual := []datastore.Node{
		{Name: "node00", IPv4: "10.0.0.10/24", IPv6: "fd00:50::10/64"},
		{Name: "node01", IPv4: "10.0.0.11/24", IPv6: "fd00:50::11/64"},
		{Name: "node02", IPv4: "10.0.0.12/24"},
	}
	ext := []datastore.BGPPeer{{Name: "ext6", PeerIP: "fd00:50::1", ASNumber: 65000}}
	got := DesiredPeers("node00", dual, ext, datastore.BGPConfiguration{})
	if len(got) != 4 || got[addr("fd00:50::11")].Type != TypeMesh || got[addr("fd00:50::1")].Type != TypeGlobal {
		t.Fatalf("node00 (dual-stack) sessions = %v; want 2 IPv4 mesh, 1 IPv6 mesh, 1 IPv6 global", got)
	}
	got = DesiredPeers("node02", dual, ext, datastore.BGPConfiguration{})
	for a := range got {
		if a.Is6() {
			t.Fatalf("node02 has no IPv6 address, yet wants an IPv6 session to %s", a)
		}
	}
	if len(got) != 2 {
		t.Fatalf("node02 sessions = %v, want the two IPv4 mesh peers", got)
	}
}

// Of each pair of tabby hosts exactly one connects: the lower address.
func TestOneSideOfEachPairConnects(t *testing.T) {
	for _, me := range []string{"node00", "node01", "node02"} {
		for addr, p := range DesiredPeers(me, nodes, nil, datastore.BGPConfiguration{}) {
			var self netip.Addr
			for _, n := range nodes {
				if n.Name == me {
					self, _ = NodeAddr(n)
				}
			}
			if p.Passive != (self.Compare(addr) > 0) {
				t.Errorf("%s -> %s: passive %v; only the higher address waits", me, addr, p.Passive)
			}
		}
	}
	ext := DesiredPeers("node01", nodes, []datastore.BGPPeer{{Name: "tor", PeerIP: "10.0.0.1", ASNumber: 65000}}, datastore.BGPConfiguration{})
	if ext[addr("10.0.0.1")].Passive {
		t.Error("an external peer must be connected to, not waited for")
	}
}
