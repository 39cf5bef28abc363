package bgp

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
)

// fakeRoutes stands in for the route table in unit tests of the install
// path; the real table (which merges BGP's claims with the tunnels' and
// repairs the kernel) is covered in driver/dataplane and end to end.
type fakeRoutes struct {
	table                map[netip.Prefix]netip.Addr
	protected, endpoints []netip.Prefix
}

func (f *fakeRoutes) Protected() ([]netip.Prefix, []netip.Prefix, error) {
	return f.protected, f.endpoints, nil
}

func (f *fakeRoutes) Learn(d []netip.Prefix, g []netip.Addr) error {
	for i := range d {
		f.table[d[i]] = g[i]
	}
	return nil
}
func (f *fakeRoutes) Unlearn(d ...netip.Prefix) error {
	for _, p := range d {
		delete(f.table, p)
	}
	return nil
}
func (f *fakeRoutes) LearnedSynced() error { return nil }
func (f *fakeRoutes) Learned() int         { return len(f.table) }

func newTestSpeaker() (*Speaker, *fakeRoutes) {
	r := &fakeRoutes{table: map[netip.Prefix]netip.Addr{}}
	s := New(nil, Config{Node: "node00", RouterID: addr("10.0.0.10")}, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return s, r
}

var (
	blockA = netip.MustParsePrefix("192.168.1.0/26")
	blockB = netip.MustParsePrefix("10.70.1.0/26")
)

func TestInstallWithdrawOrderAndOwnPaths(t *testing.T) {
	s, r := newTestSpeaker()
	s.applyBatch([]install{
		{prefix: blockA, nh: addr("10.0.0.11")},
		{prefix: blockA, withdraw: true},
		{prefix: blockA, nh: addr("10.0.0.12")},
		{prefix: netip.MustParsePrefix("192.168.9.0/26"), nh: addr("10.0.0.10")}, // our own path
	})
	if len(r.table) != 1 || r.table[blockA] != addr("10.0.0.12") {
		t.Fatalf("kernel = %v, want only %s via 10.0.0.12 (changes applied in order, own paths skipped)", r.table, blockA)
	}
}

// What a peer announces reaches the kernel only when it covers or replaces
// none of the host's own routes, and, from a node, lies in an enabled pool.
// A refused route is tried again when something changes.
func TestHostileAnnouncementsAreRefused(t *testing.T) {
	s, r := newTestSpeaker()
	node, tor := addr("10.0.0.11"), addr("10.0.0.254")
	s.peers = map[netip.Addr]PeerSpec{node: {Address: node, Type: TypeMesh}, tor: {Address: tor, Type: TypeGlobal}}
	s.pools = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	r.protected = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"),      // default route
		netip.MustParsePrefix("10.0.0.0/24"),    // connected subnet
		netip.MustParsePrefix("192.168.9.0/26"), // this host's block (blackhole)
		netip.MustParsePrefix("192.168.9.7/32"), // an endpoint of this host
		netip.MustParsePrefix("172.16.5.0/24"),  // another daemon's route
	}
	hostile := []install{
		{prefix: netip.MustParsePrefix("0.0.0.0/0"), nh: tor, from: tor},
		{prefix: netip.MustParsePrefix("10.0.0.0/16"), nh: tor, from: tor},
		{prefix: netip.MustParsePrefix("10.0.0.0/24"), nh: node, from: node},
		{prefix: netip.MustParsePrefix("192.168.9.0/26"), nh: node, from: node},
		{prefix: netip.MustParsePrefix("192.168.9.7/32"), nh: node, from: node},
		{prefix: netip.MustParsePrefix("172.16.5.0/24"), nh: tor, from: tor},
		{prefix: netip.MustParsePrefix("10.0.0.5/32"), nh: node, from: node}, // a node, outside every pool (the etcd host, say)
	}
	legit := []install{
		{prefix: blockA, nh: node, from: node},                                  // a node's block
		{prefix: netip.MustParsePrefix("192.168.9.9/32"), nh: node, from: node}, // an address a node borrowed from our block
		{prefix: netip.MustParsePrefix("10.200.0.0/24"), nh: tor, from: tor},    // the router's own network
	}
	s.applyBatch(append(append([]install{}, hostile...), legit...))
	for _, in := range hostile {
		if _, ok := r.table[in.prefix]; ok {
			t.Errorf("hostile %s from %s reached the kernel", in.prefix, in.from)
		}
	}
	for _, in := range legit {
		if r.table[in.prefix] != in.nh {
			t.Errorf("legitimate %s from %s is missing: %v", in.prefix, in.from, r.table)
		}
	}
	if len(s.refused) != len(hostile) {
		t.Fatalf("refused %d routes, want %d", len(s.refused), len(hostile))
	}
	// The host's route goes away (the connected subnet moves): the node's
	// announcement of it is still refused as outside the pools; the
	// router's /16 now covers nothing of ours and is installed.
	r.protected = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	s.retryRefused()
	if _, ok := r.table[netip.MustParsePrefix("10.0.0.0/24")]; ok {
		t.Error("a node's prefix outside the pools was installed on retry")
	}
	if r.table[netip.MustParsePrefix("10.0.0.0/16")] != tor {
		t.Errorf("the router's 10.0.0.0/16 should be installed once it covers none of the host's routes: %v", r.table)
	}
}
