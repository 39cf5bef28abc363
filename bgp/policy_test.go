package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/tabbynet/tabby/datastore"
)

// quickRetry: a first connect that loses to the other side's (or comes
// before it listens) is retried within a second, not GoBGP's default 120 s.
var quickRetry = &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1}}

// policyLab is real GoBGP speakers on loopback: ours (127.0.0.10) runs
// tabby's policy, the others (127.0.0.11, .12, ...) are mesh nodes that
// announce whatever a test makes them.
type policyLab struct {
	t      *testing.T
	us     *Speaker
	others []*server.BgpServer
	nodes  []datastore.Node
}

func newPolicyLab(t *testing.T, others int) *policyLab {
	ctx := context.Background()
	start := func(id string, port int32) *server.BgpServer {
		srv := server.NewBgpServer()
		go srv.Serve()
		if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64512, RouterId: id, ListenPort: port, ListenAddresses: []string{id}}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopServer(srv) })
		return srv
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	us := New(nil, Config{Node: "us", RouterID: netip.MustParseAddr("127.0.0.10")}, nil, log)
	us.srv = start("127.0.0.10", 10179)
	if err := us.installPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	us.pools = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	l := &policyLab{t: t, us: us, nodes: []datastore.Node{{Name: "us", IPv4: "127.0.0.10/8"}}}
	for i := range others {
		addr := fmt.Sprintf("127.0.0.%d", 11+i)
		srv := start(addr, int32(10180+i))
		l.others = append(l.others, srv)
		l.nodes = append(l.nodes, datastore.Node{Name: fmt.Sprintf("node%d", i), IPv4: addr + "/8"})
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.10", PeerAsn: 64512},
			Transport: &api.Transport{LocalAddress: addr, RemotePort: 10179}, Timers: quickRetry}}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// sync applies the peers (mesh with every other speaker unless given) and
// filters, and the owner policy, as the speaker's Sync does.
func (l *policyLab) sync(peers map[netip.Addr]PeerSpec, filters map[string]datastore.BGPFilter) {
	ctx := context.Background()
	if peers == nil {
		peers = map[netip.Addr]PeerSpec{}
		for i := range l.others {
			a := netip.MustParseAddr(fmt.Sprintf("127.0.0.%d", 11+i))
			peers[a] = PeerSpec{Address: a, Type: TypeMesh}
		}
	}
	if err := l.us.syncPolicy(ctx, peers, filters); err != nil {
		l.t.Fatal(err)
	}
	if err := l.us.syncOwners(ctx, l.nodes, false); err != nil {
		l.t.Fatal(err)
	}
	for a, p := range peers {
		if _, ok := l.us.peers[a]; ok {
			continue
		}
		port := 10180 + int32(a.As4()[3]) - 11
		if err := l.us.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{Conf: &api.PeerConf{NeighborAddress: a.String(), PeerAsn: 64512},
			Transport: &api.Transport{LocalAddress: "127.0.0.10", RemotePort: uint32(port)}, Timers: quickRetry}}); err != nil {
			l.t.Fatal(err)
		}
		l.us.peers[a] = p
	}
}

// block writes an IPAM block into the speaker's grants as its cache would;
// held maps an address's ordinal to the node holding it.
func (l *policyLab) block(cidr, affinity string, held map[int]string) {
	p := netip.MustParsePrefix(cidr)
	b := datastore.Block{CIDR: cidr, Affinity: affinity, Allocations: make([]string, 1<<(32-p.Bits()))}
	for i, node := range held {
		h := fmt.Sprintf("h-%s-%d", cidr, i)
		b.Allocations[i] = h
		v, _ := json.Marshal(datastore.Handle{ID: h, Node: node})
		l.us.own.handle(datastore.Change{Key: datastore.HandleKey(h), Value: v})
	}
	v, _ := json.Marshal(b)
	l.us.own.handle(datastore.Change{Key: datastore.BlockKey(cidr), Value: v})
}

func (l *policyLab) unblock(cidr string) {
	l.us.own.handle(datastore.Change{Key: datastore.BlockKey(cidr), Deleted: true})
}

// announce makes speaker i (-1: ours) announce prefixes with its own
// address as next hop, or with nh when given.
func (l *policyLab) announce(i int, nh string, prefixes ...string) {
	srv, self := l.us.srv, "127.0.0.10"
	if i >= 0 {
		srv, self = l.others[i], fmt.Sprintf("127.0.0.%d", 11+i)
	}
	if nh == "" {
		nh = self
	}
	other := &Speaker{cfg: Config{RouterID: netip.MustParseAddr(nh)}}
	for _, p := range prefixes {
		path, err := other.newPath(netip.MustParsePrefix(p))
		if err != nil {
			l.t.Fatal(err)
		}
		if _, err := srv.AddPath(context.Background(), &api.AddPathRequest{Path: path}); err != nil {
			l.t.Fatal(err)
		}
	}
}

// rib lists what our RIB took, as "prefix<neighbor" (or "prefix<local").
func (l *policyLab) rib() []string {
	var out []string
	l.us.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
		func(d *api.Destination) {
			for _, p := range d.Paths {
				from := p.NeighborIp
				if from == "" || from == "<nil>" {
					from = "local"
				}
				out = append(out, d.Prefix+"<"+from)
			}
		})
	slices.Sort(out)
	return out
}

// expect waits until our RIB is exactly want.
func (l *policyLab) expect(what string, want ...string) {
	l.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(l.rib(), want) {
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: our RIB %q, want %q", what, l.rib(), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The policy takes a node's prefixes only as IPAM grants them, an external
// peer's outside the pools only, and keeps our own paths.
func TestPolicyOnRealSpeakers(t *testing.T) {
	ctx := context.Background()
	l := newPolicyLab(t, 1)
	l.block("192.168.5.0/26", "node0", nil)
	l.sync(nil, nil)
	l.announce(0, "", "192.168.5.0/26", "10.99.0.0/24")
	l.announce(-1, "", "192.168.9.0/26")
	l.expect("a node's own block, not its 10.99.0.0/24", "192.168.5.0/26<127.0.0.11", "192.168.9.0/26<local")
	// Our path reaches the node in its own time: it was announced, not
	// necessarily sent, when our RIB had the node's.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		peerGot := ""
		l.others[0].ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
			func(d *api.Destination) { peerGot += d.Prefix + " " })
		if strings.Contains(peerGot, "192.168.9.0/26") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not get our block: %q", peerGot)
		}
	}
	// The same peer as an external one without a filter: nothing.
	spec := PeerSpec{Address: netip.MustParseAddr("127.0.0.11"), Type: TypeGlobal}
	l.nodes = l.nodes[:1]
	l.unblock("192.168.5.0/26")
	l.sync(map[netip.Addr]PeerSpec{spec.Address: spec}, nil)
	l.us.peers[spec.Address] = spec
	l.sync(map[netip.Addr]PeerSpec{spec.Address: spec}, nil)
	l.expect("an external peer without a filter", "192.168.9.0/26<local")
	// With a filter that accepts 10.0.0.0/8 and, against the rules, the
	// pool: only 10.99.0.0/24 comes in.
	spec.Filters = []string{"tor-in"}
	l.us.peers[spec.Address] = spec
	filters := map[string]datastore.BGPFilter{"tor-in": {Name: "tor-in", ImportV4: []datastore.FilterRule{
		{Action: "Accept", MatchOperator: "In", CIDR: "10.0.0.0/8"}, {Action: "Accept", MatchOperator: "In", CIDR: "192.168.0.0/16"}}}}
	l.sync(map[netip.Addr]PeerSpec{spec.Address: spec}, filters)
	l.expect("an external peer with a filter", "10.99.0.0/24<127.0.0.11", "192.168.9.0/26<local")
	// The filter changed to reject it: gone again.
	filters["tor-in"] = datastore.BGPFilter{Name: "tor-in", ImportV4: []datastore.FilterRule{
		{Action: "Reject", MatchOperator: "Equal", CIDR: "10.99.0.0/24"}, {Action: "Accept", MatchOperator: "In", CIDR: "10.0.0.0/8"}}}
	l.sync(map[netip.Addr]PeerSpec{spec.Address: spec}, filters)
	l.expect("a Reject Equal rule", "192.168.9.0/26<local")
	t.Logf("REPORT\tbgp\timport policy on real GoBGP speakers: a node outside the pools, an external peer inside them\tboth refused\tpass")
}

// A node takes over nothing IPAM did not give it: not another node's block
// (even with the owner's path beside it), not an address IPAM gave another
// node, not a block nobody claimed, not its own block with a next hop that
// is not itself. What IPAM gives it later is taken at once, what IPAM
// takes back leaves.
func TestNodesAnnounceOnlyWhatIPAMGivesThem(t *testing.T) {
	l := newPolicyLab(t, 2)
	l.block("192.168.5.0/26", "node0", map[int]string{9: "node1"}) // .9 is borrowed by node1
	l.block("192.168.6.0/26", "node1", nil)
	l.sync(nil, nil)
	const a, b = "127.0.0.11", "127.0.0.12"
	l.announce(0, "", "192.168.5.0/26", "192.168.6.0/26", "192.168.5.9/32")
	l.announce(1, "", "192.168.6.0/26", "192.168.5.0/26", "192.168.5.9/32", "192.168.7.0/26")
	l.announce(1, "127.0.0.99", "192.168.6.64/26")
	l.block("192.168.6.64/26", "node1", nil)
	l.sync(nil, nil)
	l.expect("each node's own", "192.168.5.0/26<"+a, "192.168.6.0/26<"+b, "192.168.5.9/32<"+b)
	// node1 claims 192.168.7.0/26 after announcing it: taken now.
	l.block("192.168.7.0/26", "node1", nil)
	l.sync(nil, nil)
	l.expect("a block claimed after its announcement", "192.168.5.0/26<"+a, "192.168.6.0/26<"+b, "192.168.5.9/32<"+b, "192.168.7.0/26<"+b)
	// The borrowed address goes back; node1's block is released.
	l.block("192.168.5.0/26", "node0", nil)
	l.unblock("192.168.6.0/26")
	l.sync(nil, nil)
	l.expect("released", "192.168.5.0/26<"+a, "192.168.7.0/26<"+b)
	t.Logf("REPORT\tbgp\ta node announces another's block, another's address, an unclaimed block, its block via another next hop\tall refused; claims taken and releases dropped at once\tpass")
}

// Export filters narrow what an external peer is told of our own paths;
// an Accept rule never adds what we learned from a node.
func TestExportFilterOnRealSpeakers(t *testing.T) {
	l := newPolicyLab(t, 2)
	l.block("192.168.5.0/26", "node0", nil)
	node0, tor := netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12")
	peers := map[netip.Addr]PeerSpec{node0: {Address: node0, Type: TypeMesh}, tor: {Address: tor, Type: TypeGlobal, Filters: []string{"out"}}}
	filters := map[string]datastore.BGPFilter{"out": {Name: "out", ExportV4: []datastore.FilterRule{
		{Action: "Reject", MatchOperator: "Equal", CIDR: "192.168.10.0/26"}, {Action: "Accept", MatchOperator: "In", CIDR: "0.0.0.0/0"}}}}
	l.nodes = l.nodes[:2] // the router is no node
	l.sync(peers, filters)
	l.announce(0, "", "192.168.5.0/26")
	l.announce(-1, "", "192.168.9.0/26", "192.168.10.0/26")
	l.expect("ours and the node's", "192.168.5.0/26<127.0.0.11", "192.168.9.0/26<local", "192.168.10.0/26<local")
	torRIB := func() string {
		var b strings.Builder
		l.others[1].ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}},
			func(d *api.Destination) { b.WriteString(d.Prefix + " ") })
		return b.String()
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(torRIB(), "192.168.9.0/26") {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // what should not come would have come by now
	if got := torRIB(); got != "192.168.9.0/26 " {
		t.Fatalf("the router learned %q, want 192.168.9.0/26 alone (not the rejected 192.168.10.0/26, not the node's block)", got)
	}
	// The rule dropped: the withheld block is told now.
	filters["out"] = datastore.BGPFilter{Name: "out", ExportV4: []datastore.FilterRule{{Action: "Accept", MatchOperator: "In", CIDR: "0.0.0.0/0"}}}
	l.sync(peers, filters)
	deadline = time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(torRIB(), "192.168.10.0/26") {
		time.Sleep(200 * time.Millisecond)
	}
	if got := torRIB(); !strings.Contains(got, "192.168.10.0/26") || strings.Contains(got, "192.168.5.0/26") {
		t.Fatalf("after the Reject rule went the router learned %q, want both our blocks and not the node's", got)
	}
	t.Logf("REPORT\tbgp\texport filter: Reject one own block, Accept 0.0.0.0/0\tthe block withheld, no learned route exported\tpass")
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
	exportOnly := map[string]datastore.BGPFilter{"f": {Name: "f", ExportV4: filters["f"].ImportV4}}
	if filterSignature(filterStatements(1, peers, exportOnly)) == sign(1) {
		t.Fatal("an export rule signs like the same import rule")
	}
	if a, b := sign(1), sign(2); a != b {
		t.Fatalf("the same filters sign differently:\n%s\n%s", a, b)
	}
	before := sign(1)
	filters["f"] = datastore.BGPFilter{Name: "f", ImportV4: []datastore.FilterRule{{Action: "Accept", MatchOperator: "In", CIDR: "10.201.0.0/16"}}}
	if sign(1) == before {
		t.Fatal("another rule signs the same")
	}
}

// stopServer removes the peers before stopping: GoBGP's StopBgp rewrites
// the global settings that an established session's reader reads on each
// UPDATE (a data race inside GoBGP 3.37 that -race reports). Only once the
// server has let go of a deleted peer's session, which it says with the
// peer's last state event, has that reader stopped for certain.
func stopServer(srv *server.BgpServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idle := make(chan string, 64)
	_ = srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		// A deleted peer's last event has no type (GoBGP 3.37).
		if e := r.GetPeer(); e.GetPeer().GetState().GetSessionState() == api.PeerState_IDLE {
			select {
			case idle <- e.GetPeer().GetConf().GetNeighborAddress():
			default:
			}
		}
	})
	up := map[string]bool{}
	_ = srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		up[p.GetConf().GetNeighborAddress()] = p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
	})
	for a, established := range up {
		_ = srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a})
		if !established {
			delete(up, a)
		}
	}
	for len(up) > 0 {
		select {
		case a := <-idle:
			delete(up, a)
		case <-ctx.Done():
			up = nil
		}
	}
	srv.Stop()
}
