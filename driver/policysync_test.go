package driver

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/hostlocal"
	"github.com/tabbynet/tabby/driver/policy"
)

type scriptCatcher struct {
	script string // with the sets' elements from the index
	full   int
	deltas []map[string]policy.SetChange
	// compiled is the delta each compile was handed for its installed sets.
	compiled []map[string]policy.SetChange
}

func (s *scriptCatcher) ApplyIndexed(script string, src policy.SetSource, delta map[string]policy.SetChange) (bool, error) {
	script = policy.Whole(script, src)
	changed := script != s.script
	s.script = script
	s.full++
	s.compiled = append(s.compiled, delta)
	return changed, nil
}

func (s *scriptCatcher) ApplyElements(d map[string]policy.SetChange) (bool, error) {
	s.deltas = append(s.deltas, d)
	return true, nil
}

// SyncPolicy compiles from etcd: this host's joined endpoints get chains,
// every host's endpoints fill the sets, and a policy stored with a bad
// selector (past the CLI) is left out instead of blocking the others.
func TestSyncPolicyFromEtcd(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	put := func(key string, v any) {
		t.Helper()
		if err := f.st.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	net1 := map[string]string{LabelNetwork: "net1"}
	put(datastore.EndpointKey("node00", "e1"), &datastore.WorkloadEndpoint{Node: "node00", EndpointID: "e1", Interface: "cali1111111111a",
		IPv4: "192.168.0.1", Labels: net1, Profiles: []string{"net1"}})
	// Joined: this host's state says so (the record does not).
	if err := f.d.local.Put(hostlocal.Joined{EndpointID: "e1", SandboxKey: "/sb/1", Gateway: "169.254.1.1"}); err != nil {
		t.Fatal(err)
	}
	put(datastore.EndpointKey("node00", "e2"), &datastore.WorkloadEndpoint{Node: "node00", EndpointID: "e2", Interface: "cali2222222222a",
		IPv4: "192.168.0.2", Labels: net1, Profiles: []string{"net1"}}) // not joined yet
	put(datastore.EndpointKey("node01", "e3"), &datastore.WorkloadEndpoint{Node: "node01", EndpointID: "e3", Interface: "cali3333333333a",
		IPv4: "192.168.0.77", Labels: net1, Profiles: []string{"net1"}, SandboxKey: "/sb/3"})
	put(datastore.ProfileKey("net1"), &datastore.Profile{Name: "net1", Egress: []datastore.Rule{{Action: "Allow"}},
		Ingress: []datastore.Rule{{Action: "Allow", Source: datastore.RuleTarget{Selector: LabelNetwork + " == 'net1'"}}}})
	put(datastore.PolicyKey("bad"), &datastore.NetworkPolicy{Name: "bad", Selector: "role =="})
	put(datastore.PolicyKey("good"), &datastore.NetworkPolicy{Name: "good", Selector: "all()",
		Ingress: []datastore.Rule{{Action: "Deny", Protocol: "UDP"}}})
	var c scriptCatcher
	f.caughtUp(t)
	if err := f.d.SyncPolicy(ctx, &c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"chain in-cali1111111111a", "meta l4proto udp drop", "192.168.0.1, 192.168.0.2, 192.168.0.77"} {
		if !strings.Contains(c.script, want) {
			t.Errorf("script lacks %q:\n%s", want, c.script)
		}
	}
	for _, not := range []string{"cali2222222222a", "cali3333333333a"} {
		if strings.Contains(c.script, not) {
			t.Errorf("script has chains for %s, which is not joined here:\n%s", not, c.script)
		}
	}
	// Another host's endpoint comes and goes: element updates of the
	// sets that select it, no compile.
	set := policy.SetName(LabelNetwork+" == 'net1'", false)
	put(datastore.EndpointKey("node01", "e4"), &datastore.WorkloadEndpoint{Node: "node01", EndpointID: "e4", Interface: "cali4444444444a",
		IPv4: "192.168.0.88", Labels: net1, Profiles: []string{"net1"}})
	f.caughtUp(t)
	if err := f.d.SyncPolicy(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if c.full != 1 || len(c.deltas) != 1 || fmt.Sprint(c.deltas[0][set]) != "{[192.168.0.88] []}" {
		t.Fatalf("another host's new endpoint: %d compiles, deltas %v; want 1 and %s gaining 192.168.0.88", c.full, c.deltas, set)
	}
	if err := f.st.Delete(ctx, datastore.EndpointKey("node01", "e4")); err != nil {
		t.Fatal(err)
	}
	f.caughtUp(t)
	if err := f.d.SyncPolicy(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if c.full != 1 || len(c.deltas) != 2 || fmt.Sprint(c.deltas[1][set]) != "{[] [192.168.0.88]}" {
		t.Fatalf("another host's endpoint gone: %d compiles, deltas %v", c.full, c.deltas)
	}
	// This host's endpoint changes: a compile, whose sets agree with the
	// index.
	put(datastore.EndpointKey("node00", "e2"), &datastore.WorkloadEndpoint{Node: "node00", EndpointID: "e2", Interface: "cali2222222222a",
		IPv4: "192.168.0.3", Labels: net1, Profiles: []string{"net1"}})
	f.caughtUp(t)
	if err := f.d.SyncPolicy(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if c.full != 2 || !strings.Contains(c.script, "192.168.0.1, 192.168.0.3, 192.168.0.77 }") {
		t.Fatalf("a local endpoint's change must compile (%d compiles), with the sets current:\n%s", c.full, c.script)
	}
	// The installed sets move on by the change alone.
	if got := fmt.Sprint(c.compiled[1][set]); got != "{[192.168.0.3] [192.168.0.2]}" {
		t.Fatalf("the compile was handed %s for %s, want 192.168.0.3 in and 192.168.0.2 out", got, set)
	}
}

// CrossSubnet between hosts of one LAN with different prefix lengths: the
// tunnel routes as BGP decides (datastore.Tunnels, from this host's
// prefix), so the block is routed once, directly, not by both or neither.
func TestCrossSubnetDecidesFromThisHostsPrefix(t *testing.T) {
	pools := []vxlanPool{{cidr: netip.MustParsePrefix("10.70.0.0/16"), mode: datastore.ModeCrossSubnet}}
	block := netip.MustParsePrefix("10.70.1.0/26")
	for _, c := range []struct {
		mine, theirs string
		tunnel       bool
	}{
		{"10.0.0.10/16", "10.0.0.11/24", false}, // masked prefixes differ, same LAN
		{"10.0.0.10/24", "10.0.0.11/16", false},
		{"10.0.1.10/24", "10.0.0.11/16", true}, // outside our /24
		{"10.0.0.10/24", "10.0.0.11/24", false},
	} {
		if got := tunnels(pools, block, netip.MustParsePrefix(c.mine), netip.MustParsePrefix(c.theirs)); got != c.tunnel {
			t.Errorf("from %s to %s: tunnel %v, want %v", c.mine, c.theirs, got, c.tunnel)
		}
	}
}
