package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/hostlocal"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// fixture is a driver on a real etcd and a fresh network namespace.
type fixture struct {
	// localDir holds the driver's host-local state.
	localDir string
	d        *Driver
	st       *datastore.Store
	ns       string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	st := etcdtest.NewStore(t)
	b := make([]byte, 4)
	rand.Read(b)
	ns := "tabbyd-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	dp, err := dataplane.New("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	pool := datastore.IPPool{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26}
	if err := st.Put(context.Background(), datastore.PoolKey("p"), &pool); err != nil {
		t.Fatal(err)
	}
	localDir := filepath.Join(t.TempDir(), "endpoints")
	local, _, err := hostlocal.Open(localDir)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{localDir: localDir, d: New(st, etcdtest.NewView(t, st), local, "node00", dp, slog.New(slog.NewTextHandler(io.Discard, nil))), st: st, ns: ns}
}

// caughtUp waits until the driver's view holds every write made so far.
func (f *fixture) caughtUp(t *testing.T) {
	t.Helper()
	etcdtest.CaughtUp(t, f.st, f.d.view)
}

func (f *fixture) sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", f.ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (f *fixture) network(t *testing.T, id string) {
	t.Helper()
	err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: id,
		IPv4Data: []*network.IPAMData{{Pool: "0.0.0.0/0", Gateway: "169.254.1.1/32"}}})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) endpoint(t *testing.T, netID, epID, ip string) {
	t.Helper()
	resp, err := f.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID,
		Interface: &network.EndpointInterface{Address: ip + "/32"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Interface == nil || resp.Interface.MacAddress != ContainerMAC {
		t.Fatalf("CreateEndpoint should hand Docker the MAC %s, got %+v", ContainerMAC, resp.Interface)
	}
}

const (
	net1 = "n1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	ep1  = "e1111111111111111111111111111111"
	ep2  = "e2222222222222222222222222222222"
)

func TestCreateNetworkRejectsUnknownOptionAndStoresNothing(t *testing.T) {
	f := newFixture(t)
	err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: net1,
		Options:  map[string]interface{}{optGeneric: map[string]interface{}{"color": "blue"}},
		IPv4Data: []*network.IPAMData{{Pool: "0.0.0.0/0"}}})
	if err == nil || !strings.Contains(err.Error(), `unknown option "color"`) {
		t.Fatalf("unknown -o: %v", err)
	}
	err = f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: net1,
		IPv4Data: []*network.IPAMData{{Pool: "172.18.0.0/16"}}})
	if err == nil || !strings.Contains(err.Error(), "--ipam-driver tabby") {
		t.Fatalf("a subnet from another IPAM driver must be refused: %v", err)
	}
	keys, _ := f.st.ListKeys(context.Background(), datastore.Prefix)
	for _, k := range keys {
		if !strings.HasPrefix(k, datastore.PoolsDir) {
			t.Fatalf("a refused CreateNetwork left %s in etcd", k)
		}
	}
}

func TestJoinTwoNetworksPicksDistinctGatewaysAndDeletesAreIdempotent(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	f.network(t, "n2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	f.endpoint(t, net1, ep1, "192.168.1.1")
	f.endpoint(t, "n2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", ep2, "192.168.1.2")
	j1, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := f.d.Join(&network.JoinRequest{NetworkID: "n2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", EndpointID: ep2, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil {
		t.Fatal(err)
	}
	if j1.Gateway != "169.254.1.1" || j2.Gateway != "169.254.1.2" {
		t.Fatalf("gateways %s and %s, want 169.254.1.1 then 169.254.1.2 in one sandbox", j1.Gateway, j2.Gateway)
	}
	if j1.InterfaceName.DstPrefix != "cali" || j1.StaticRoutes[0].Destination != "169.254.1.1/32" || j1.StaticRoutes[0].RouteType != 1 {
		t.Fatalf("join response %+v", j1)
	}
	if r := f.sh(t, "route", "show", "proto", "77"); !strings.Contains(r, "192.168.1.1 dev cali"+ep1[:11]) {
		t.Fatalf("routes after join: %s", r)
	}
	for i := 0; i < 2; i++ {
		if err := f.d.Leave(&network.LeaveRequest{NetworkID: net1, EndpointID: ep1}); err != nil {
			t.Fatalf("leave %d: %v", i, err)
		}
		if err := f.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: net1, EndpointID: ep1}); err != nil {
			t.Fatalf("delete endpoint %d: %v", i, err)
		}
		if err := f.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: net1}); err != nil {
			t.Fatalf("delete network %d: %v", i, err)
		}
	}
	if l := f.sh(t, "-o", "link"); strings.Contains(l, "cali"+ep1[:11]) {
		t.Fatalf("link left after leave: %s", l)
	}
	// The sandbox's first gateway is free again for the next network.
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.3")
	j3, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/x"})
	if err != nil || j3.Gateway != "169.254.1.1" {
		t.Fatalf("rejoin gateway %v %v, want 169.254.1.1", j3, err)
	}
}

// Once the view holds the endpoint, docker run's reads (endpoint info,
// join) cost etcd nothing.
func TestJoinReadsTheView(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.1")
	f.caughtUp(t)
	before := f.st.Requests()
	if _, err := f.d.EndpointInfo(&network.InfoRequest{NetworkID: net1, EndpointID: ep1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/x"}); err != nil {
		t.Fatal(err)
	}
	if after := f.st.Requests(); after["Range"] != before["Range"] || after["Txn"] != before["Txn"] {
		t.Fatalf("endpoint info and join went to etcd: %v, before %v", after, before)
	}
}

// DeleteNetwork reads the network from the view; deleting it again, once
// it is gone, succeeds.
func TestDeleteNetworkReadsTheView(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	f.caughtUp(t)
	before := f.st.Requests()
	if err := f.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: net1}); err != nil {
		t.Fatal(err)
	}
	if after := f.st.Requests(); after["Range"] != before["Range"] {
		t.Fatalf("delete network read etcd: %v, before %v", after, before)
	}
	var n datastore.Network
	if _, err := f.st.Get(context.Background(), datastore.NetworkKey(net1), &n); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("the network's record after DeleteNetwork: %+v, %v", n, err)
	}
	f.caughtUp(t)
	if err := f.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: net1}); err != nil {
		t.Fatalf("deleting a deleted network: %v", err)
	}
}

// A --subnet network's Join routes its subnet by the endpoint's own
// gateway; a network drawing from the whole pool gets no such route.
func TestJoinRoutesOwnSubnetByItsInterface(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	const sub = "n2bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	if err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: sub,
		IPv4Data: []*network.IPAMData{{Pool: "192.168.9.0/24", Gateway: "169.254.1.1/32"}}}); err != nil {
		t.Fatal(err)
	}
	f.endpoint(t, net1, ep1, "192.168.1.1")
	f.endpoint(t, sub, ep2, "192.168.9.2")
	j1, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/y"})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := f.d.Join(&network.JoinRequest{NetworkID: sub, EndpointID: ep2, SandboxKey: "/var/run/docker/netns/y"})
	if err != nil {
		t.Fatal(err)
	}
	if len(j1.StaticRoutes) != 1 {
		t.Fatalf("a network without --subnet got routes %+v, want only its gateway's", j1.StaticRoutes[1:])
	}
	if len(j2.StaticRoutes) != 2 || j2.StaticRoutes[1].Destination != "192.168.9.0/24" ||
		j2.StaticRoutes[1].RouteType != routeNextHop || j2.StaticRoutes[1].NextHop != j2.Gateway || j2.Gateway != "169.254.1.2" {
		t.Fatalf("--subnet network's join routes %+v (gateway %s), want 192.168.9.0/24 via 169.254.1.2", j2.StaticRoutes, j2.Gateway)
	}
}

func TestJoinUndoesVethWhenRecordingFails(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.1")
	// Recording where the endpoint joined fails: its directory is gone.
	f.d.testHookAfterSetup = func() { os.RemoveAll(f.localDir) }
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "sb"}); err == nil {
		t.Fatal("join must fail when it cannot record the join")
	}
	if _, ok := f.d.local.Get(ep1); ok {
		t.Fatal("a failed join is remembered as joined")
	}
	if l := f.sh(t, "-o", "link"); strings.Contains(l, "cali") || strings.Contains(l, "tmp") {
		t.Fatalf("failed join left links: %s", l)
	}
	if r := f.sh(t, "route", "show", "proto", "77"); r != "" {
		t.Fatalf("failed join left routes: %s", r)
	}
}

// Joining a network whose address lies in another network's --subnet of
// the same container moves that route aside in the sandbox; when the
// sandbox cannot be opened the join fails, names the address, and leaves
// no veth behind.
func TestJoinCoveredBySubnetRouteUndoesWhenSandboxIsUnreachable(t *testing.T) {
	f := newFixture(t)
	f.network(t, net1)
	const whole = "n3cccccccccccccccccccccccccccccc"
	if err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: whole,
		IPv4Data: []*network.IPAMData{{Pool: "192.168.0.0/16", Gateway: "169.254.1.1/32"}}}); err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(t.TempDir(), "netns-not-mounted")
	os.WriteFile(sandbox, nil, 0o644)
	f.endpoint(t, whole, ep1, "192.168.1.1")
	f.endpoint(t, net1, ep2, "192.168.200.1")
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: whole, EndpointID: ep1, SandboxKey: sandbox}); err != nil {
		t.Fatal(err)
	}
	_, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep2, SandboxKey: sandbox})
	if err == nil || !strings.Contains(err.Error(), "192.168.200.1") {
		t.Fatalf("join should fail naming the address, got %v", err)
	}
	if l := f.sh(t, "-o", "link"); strings.Contains(l, dataplane.HostIfName(ep2)) {
		t.Fatalf("failed join left its veth: %s", l)
	}
}

// An IPv6-only network (--ipv4=false --ipv6): Docker sends no IPv4 data;
// its endpoints have a /128 alone and join with only the IPv6 gateway. An
// endpoint without IPv4 on a network that has it is refused.
func TestIPv6OnlyNetworkEndpointJoin(t *testing.T) {
	f := newFixture(t)
	const v6 = "n6dddddddddddddddddddddddddddddd"
	if err := f.d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: v6,
		IPv6Data: []*network.IPAMData{{Pool: "::/0", Gateway: "fe80::1/64"}}}); err != nil {
		t.Fatal(err)
	}
	var n datastore.Network
	if _, err := f.st.Get(context.Background(), datastore.NetworkKey(v6), &n); err != nil || !n.NoIPv4 || !n.IPv6 || n.Pool != "" {
		t.Fatalf("stored network %+v (%v), want IPv6-only", n, err)
	}
	if _, err := f.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: v6, EndpointID: ep1,
		Interface: &network.EndpointInterface{AddressIPv6: "fd00:192:168::5/128"}}); err != nil {
		t.Fatal(err)
	}
	j, err := f.d.Join(&network.JoinRequest{NetworkID: v6, EndpointID: ep1, SandboxKey: "/var/run/docker/netns/z"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Gateway != "" || len(j.StaticRoutes) != 0 || j.GatewayIPv6 != "fe80::1" {
		t.Fatalf("join answer %+v, want only the IPv6 gateway fe80::1", j)
	}
	if r := f.sh(t, "-6", "route", "show", "proto", "77"); !strings.Contains(r, "fd00:192:168::5 dev "+dataplane.HostIfName(ep1)) {
		t.Fatalf("no /128 route to the endpoint: %s", r)
	}
	f.network(t, net1)
	_, err = f.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: net1, EndpointID: ep2,
		Interface: &network.EndpointInterface{AddressIPv6: "fd00:192:168::6/128"}})
	if err == nil || !strings.Contains(err.Error(), "no IPv4 address") {
		t.Fatalf("an endpoint without IPv4 on an IPv4 network: got %v", err)
	}
}

// A rename converges from the records: the endpoint follows its network's
// name, the profile named by ID goes, and what a partial failure (or a
// hand) undid comes back on the next pass; a profile a user edited, or
// made for no network, is left alone.
func TestNamesConvergeFromTheRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.1")
	if err := f.d.SetNetworkName(ctx, net1, "net1", "tabby", nil); err != nil {
		t.Fatal(err)
	}
	pass := func() {
		t.Helper()
		f.caughtUp(t)
		if err := f.d.ReconcileNames(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		var p datastore.Profile
		if _, err := f.st.Get(ctx, datastore.ProfileKey("net1"), &p); err != nil || p.Network != net1 {
			t.Fatalf("%s: profile net1: %+v %v", when, p, err)
		}
		if _, err := f.st.Get(ctx, datastore.ProfileKey(net1), &p); err == nil {
			t.Fatalf("%s: the placeholder profile named by ID is still there", when)
		}
		var ep datastore.WorkloadEndpoint
		f.st.Get(ctx, datastore.EndpointKey("node00", ep1), &ep)
		if ep.Labels[LabelNetwork] != "net1" || len(ep.Profiles) != 1 || ep.Profiles[0] != "net1" {
			t.Fatalf("%s: endpoint not relabelled: %+v", when, ep)
		}
	}
	pass()
	check("after the rename")

	// Half undone: the endpoint's label back to the ID, the profile gone.
	err := datastore.Update(ctx, f.st, datastore.EndpointKey("node00", ep1), func(e *datastore.WorkloadEndpoint, _ bool) error {
		e.Profiles, e.Labels = []string{net1}, map[string]string{LabelNetwork: net1}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.Delete(ctx, datastore.ProfileKey("net1")); err != nil {
		t.Fatal(err)
	}
	mine := datastore.Profile{Name: "mine", Egress: []datastore.Rule{{Action: "Allow"}}}
	if err := f.st.Put(ctx, datastore.ProfileKey("mine"), &mine); err != nil {
		t.Fatal(err)
	}
	pass()
	check("after a partial undo")

	// A user's edit of the network's profile stays.
	err = datastore.Update(ctx, f.st, datastore.ProfileKey("net1"), func(p *datastore.Profile, _ bool) error {
		p.Ingress = append(p.Ingress, datastore.Rule{Action: "Allow", Protocol: "TCP"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pass()
	var p datastore.Profile
	if _, err := f.st.Get(ctx, datastore.ProfileKey("net1"), &p); err != nil || len(p.Ingress) != 2 {
		t.Fatalf("an edited profile was rewritten: %+v %v", p, err)
	}
	if _, err := f.st.Get(ctx, datastore.ProfileKey("mine"), &p); err != nil {
		t.Fatalf("a user's profile of no network was removed: %v", err)
	}
	if err := f.d.SetNetworkName(ctx, "unknown", "x", "tabby", nil); err == nil {
		t.Fatal("naming a network tabby does not know must fail")
	}
}

func TestReconcileRemovesLeaksAndRestoresRoutes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.1")
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "sb"}); err != nil {
		t.Fatal(err)
	}
	// A crash left: a veth of an endpoint etcd does not know, a stale
	// blackhole, a missing endpoint route and a block claim with no blackhole.
	f.sh(t, "link", "add", "cali99999999999", "type", "veth", "peer", "name", "tmp99999999999")
	f.sh(t, "route", "add", "blackhole", "10.0.0.0/26", "proto", "77")
	f.sh(t, "route", "del", "192.168.1.1/32")
	f.st.Put(ctx, datastore.AffinityKey("node00", "192.168.1.0/26"), &datastore.Affinity{Node: "node00", Block: "192.168.1.0/26"})
	// A route with a gateway is BGP's and must survive.
	f.sh(t, "link", "add", "uplink", "type", "veth", "peer", "name", "uplinkp")
	f.sh(t, "addr", "add", "10.2.0.1/24", "dev", "uplink")
	f.sh(t, "link", "set", "uplinkp", "up")
	f.sh(t, "link", "set", "uplink", "up")
	f.sh(t, "route", "add", "10.1.0.0/24", "via", "10.2.0.2", "proto", "77")
	f.caughtUp(t)
	if err := f.d.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	r := f.sh(t, "route", "show", "proto", "77")
	for _, want := range []string{"192.168.1.1 dev cali" + ep1[:11], "blackhole 192.168.1.0/26", "10.1.0.0/24 via 10.2.0.2"} {
		if !strings.Contains(r, want) {
			t.Fatalf("after reconcile routes lack %q:\n%s", want, r)
		}
	}
	if strings.Contains(r, "10.0.0.0/26") {
		t.Fatalf("stale blackhole survived reconcile:\n%s", r)
	}
	if l := f.sh(t, "-o", "link"); strings.Contains(l, "cali99999999999") {
		t.Fatalf("leaked veth survived reconcile:\n%s", l)
	}
}

// Joins into one sandbox at once still get distinct gateways; joins into
// different sandboxes do not wait for each other (one Docker host starts
// many containers at once, and a global lock made the last wait past its
// timeout).
func TestConcurrentJoins(t *testing.T) {
	f := newFixture(t)
	const n = 6
	var wg sync.WaitGroup
	gws := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		netID, epID := fmt.Sprintf("n%031d", i), fmt.Sprintf("e%031d", i)
		f.network(t, netID)
		f.endpoint(t, netID, epID, fmt.Sprintf("192.168.2.%d", i+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, err := f.d.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/shared"})
			if errs[i] = err; err == nil {
				gws[i] = j.Gateway
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, gw := range gws {
		if errs[i] != nil || seen[gw] {
			t.Fatalf("concurrent joins into one sandbox: gateways %v, errors %v", gws, errs)
		}
		seen[gw] = true
	}

	var locks sandboxLocks
	unlockA := locks.lock("a")
	other := make(chan func())
	go func() { other <- locks.lock("b") }()
	select {
	case unlockB := <-other:
		unlockB()
	case <-time.After(5 * time.Second):
		t.Fatal("a join into sandbox b waited for one into sandbox a")
	}
	go func() { other <- locks.lock("a") }()
	select {
	case <-other:
		t.Fatal("two joins into sandbox a ran at once")
	case <-time.After(100 * time.Millisecond):
	}
	unlockA()
	(<-other)()
	if len(locks.locks) != 0 {
		t.Fatalf("locks of sandboxes nobody joins are kept: %v", locks.locks)
	}
}

// Where endpoints joined is host-local: a restarted daemon (a new driver
// on the same state directory) keeps their interfaces, and adopts the
// joins an older version recorded in etcd instead.
func TestReconcileFindsJoinsAfterARestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.network(t, net1)
	f.endpoint(t, net1, ep1, "192.168.1.1")
	if _, err := f.d.Join(&network.JoinRequest{NetworkID: net1, EndpointID: ep1, SandboxKey: "sb"}); err != nil {
		t.Fatal(err)
	}
	var rec datastore.WorkloadEndpoint
	if _, err := f.st.Get(ctx, datastore.EndpointKey("node00", ep1), &rec); err != nil || rec.SandboxKey != "" || rec.Gateway != "" {
		t.Fatalf("a join wrote host-local facts to etcd: %+v %v", rec, err)
	}
	// An endpoint an older version joined: its record says so, no file does.
	f.endpoint(t, net1, ep2, "192.168.1.2")
	err := datastore.Update(ctx, f.st, datastore.EndpointKey("node00", ep2), func(e *datastore.WorkloadEndpoint, _ bool) error {
		e.SandboxKey, e.Gateway = "sb2", "169.254.1.1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.sh(t, "link", "add", dataplane.HostIfName(ep2), "type", "veth", "peer", "name", "tmp2")
	f.sh(t, "link", "set", dataplane.HostIfName(ep2), "up")
	f.sh(t, "link", "set", "tmp2", "up")

	local, bad, err := hostlocal.Open(f.localDir)
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	again := New(f.st, f.d.view, local, "node00", f.d.dp, f.d.log)
	f.caughtUp(t)
	if err := again.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	l := f.sh(t, "-o", "link")
	for _, ep := range []string{ep1, ep2} {
		if !strings.Contains(l, dataplane.HostIfName(ep)) {
			t.Fatalf("restart removed the interface of joined endpoint %s:\n%s", ep[:8], l)
		}
	}
	if j, ok := local.Get(ep2); !ok || j.SandboxKey != "sb2" || j.Gateway != "169.254.1.1" {
		t.Fatalf("the older version's join was not adopted: %+v %v", j, ok)
	}
	// Its Leave clears the record's old fields.
	if err := again.Leave(&network.LeaveRequest{NetworkID: net1, EndpointID: ep2}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Get(ctx, datastore.EndpointKey("node00", ep2), &rec); err != nil || rec.SandboxKey != "" || rec.Gateway != "" {
		t.Fatalf("after leave the record still holds the old join: %+v %v", rec, err)
	}
}
