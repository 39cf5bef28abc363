package bgp

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/tabbynet/tabby/datastore"
)

// Two real GoBGP speakers on loopback: one runs tabby's policy, the other
// announces. The policy takes a node's prefixes inside the pools only, an
// external peer's outside them only, and keeps our own paths.
func TestPolicyOnRealSpeakers(t *testing.T) {
	ctx := context.Background()
	start := func(id string, port int32) *server.BgpServer {
		srv := server.NewBgpServer()
		go srv.Serve()
		if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64512, RouterId: id, ListenPort: port, ListenAddresses: []string{id}}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		return srv
	}
	us := &Speaker{cfg: Config{RouterID: netip.MustParseAddr("127.0.0.10")}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		peers: map[netip.Addr]PeerSpec{}}
	us.srv = start("127.0.0.10", 10179)
	peer := start("127.0.0.11", 10180)
	if err := us.installPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	us.pools = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	spec := PeerSpec{Address: netip.MustParseAddr("127.0.0.11"), Type: TypeMesh}
	if err := us.syncPolicy(ctx, map[netip.Addr]PeerSpec{spec.Address: spec}, nil); err != nil {
		t.Fatal(err)
	}
	if err := us.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.11", PeerAsn: 64512},
		Transport: &api.Transport{LocalAddress: "127.0.0.10", RemotePort: 10180}}}); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.10", PeerAsn: 64512},
		Transport: &api.Transport{LocalAddress: "127.0.0.11", RemotePort: 10179}}}); err != nil {
		t.Fatal(err)
	}
	announce := func(srv *server.BgpServer, nh string, prefixes ...string) {
		other := &Speaker{cfg: Config{RouterID: netip.MustParseAddr(nh)}}
		for _, p := range prefixes {
			path, err := other.newPath(netip.MustParsePrefix(p))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.AddPath(ctx, &api.AddPathRequest{Path: path}); err != nil {
				t.Fatal(err)
			}
		}
	}
	announce(peer, "127.0.0.11", "192.168.5.0/26", "10.99.0.0/24")
	announce(us.srv, "127.0.0.10", "192.168.9.0/26")
	rib := func(srv *server.BgpServer) string {
		var b strings.Builder
		srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
			func(d *api.Destination) { b.WriteString(d.Prefix + " ") })
		return b.String()
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(rib(us.srv), "192.168.5.0/26") {
		time.Sleep(200 * time.Millisecond)
	}
	got := rib(us.srv)
	if !strings.Contains(got, "192.168.5.0/26") || !strings.Contains(got, "192.168.9.0/26") || strings.Contains(got, "10.99.0.0/24") {
		t.Fatalf("our RIB %q: want the node's pool block and our own, not the node's 10.99.0.0/24", got)
	}
	if peerGot := rib(peer); !strings.Contains(peerGot, "192.168.9.0/26") {
		t.Fatalf("the node did not get our block: %q", peerGot)
	}
	// The same peer as an external one without a filter: nothing.
	spec.Type = TypeGlobal
	us.peers[spec.Address] = spec // a session that exists: it is soft-reset
	if err := us.syncPolicy(ctx, map[netip.Addr]PeerSpec{spec.Address: spec}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if got := rib(us.srv); strings.Contains(got, "192.168.5.0/26") || strings.Contains(got, "10.99.0.0/24") {
		t.Fatalf("an external peer without a filter: our RIB %q, want nothing of it", got)
	}
	// With a filter that accepts 10.0.0.0/8 and, against the rules, the
	// pool: only 10.99.0.0/24 comes in.
	spec.Filters = []string{"tor-in"}
	us.peers[spec.Address] = spec
	filters := map[string]datastore.BGPFilter{"tor-in": {Name: "tor-in", ImportV4: []datastore.FilterRule{
		{Action: "Accept", MatchOperator: "In", CIDR: "10.0.0.0/8"}, {Action: "Accept", MatchOperator: "In", CIDR: "192.168.0.0/16"}}}}
	if err := us.syncPolicy(ctx, map[netip.Addr]PeerSpec{spec.Address: spec}, filters); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(rib(us.srv), "10.99.0.0/24") {
		time.Sleep(200 * time.Millisecond)
	}
	if got := rib(us.srv); strings.Contains(got, "192.168.5.0/26") || !strings.Contains(got, "10.99.0.0/24") {
		t.Fatalf("as an external peer with a filter: our RIB %q, want 10.99.0.0/24 and not the pool block", got)
	}
	// The filter changed to reject it: gone again.
	filters["tor-in"] = datastore.BGPFilter{Name: "tor-in", ImportV4: []datastore.FilterRule{
		{Action: "Reject", MatchOperator: "Equal", CIDR: "10.99.0.0/24"}, {Action: "Accept", MatchOperator: "In", CIDR: "10.0.0.0/8"}}}
	if err := us.syncPolicy(ctx, map[netip.Addr]PeerSpec{spec.Address: spec}, filters); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && strings.Contains(rib(us.srv), "10.99.0.0/24") {
		time.Sleep(200 * time.Millisecond)
	}
	if got := rib(us.srv); strings.Contains(got, "10.99.0.0/24") {
		t.Fatalf("a Reject Equal rule: our RIB %q still has 10.99.0.0/24", got)
	}
	t.Logf("REPORT\tbgp\timport policy on real GoBGP speakers: a node outside the pools, an external peer inside them\tboth refused\tpass")
}

func TestValidateFilterNamesTheBadField(t *testing.T) {
	for _, c := range []struct {
		f    datastore.BGPFilter
		want string
	}{
		{datastore.BGPFilter{Name: "f", ImportV4: []datastore.FilterRule{{Action: "Allow", MatchOperator: "In", CIDR: "10.0.0.0/8"}}}, "spec.importV4[0].action"},
		{datastore.BGPFilter{Name: "f", ImportV4: []datastore.FilterRule{{Action: "Accept", MatchOperator: "Within", CIDR: "10.0.0.0/8"}}}, "spec.importV4[0].matchOperator"},
		{datastore.BGPFilter{Name: "f", ImportV6: []datastore.FilterRule{{Action: "Accept", MatchOperator: "In", CIDR: "10.0.0.0/8"}}}, "spec.importV6[0].cidr"},
	} {
		if err := ValidateFilter(c.f); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: want an error naming %s, got %v", c.f, c.want, err)
		}
	}
	ok := datastore.BGPFilter{Name: "f", ImportV4: []datastore.FilterRule{{Action: "Reject", MatchOperator: "NotEqual", CIDR: "10.0.0.0/8"}}}
	if err := ValidateFilter(ok); err != nil {
		t.Fatal(err)
	}
}

// The filter policy is rebuilt (and every peer soft-reset) only when what
// it is built from changes: two builds of the same filters, in different
// generations, sign alike; another rule does not.
func TestFilterSignatureIsStable(t *testing.T) {
	peer := netip.MustParseAddr("10.0.0.254")
	peers := map[netip.Addr]PeerSpec{peer: {Address: peer, Type: TypeGlobal, Filters: []string{"f"}}}
	filters := map[string]datastore.BGPFilter{"f": {Name: "f", ImportV4: []datastore.FilterRule{{Action: "Accept", MatchOperator: "In", CIDR: "10.200.0.0/16"}}}}
	sign := func(gen int) string { return filterSignature(filterStatements(gen, peers, filters)) }
	if a, b := sign(1), sign(2); a != b {
		t.Fatalf("the same filters sign differently:\n%s\n%s", a, b)
	}
	before := sign(1)
	filters["f"] = datastore.BGPFilter{Name: "f", ImportV4: []datastore.FilterRule{{Action: "Accept", MatchOperator: "In", CIDR: "10.201.0.0/16"}}}
	if sign(1) == before {
		t.Fatal("another rule signs the same")
	}
}
