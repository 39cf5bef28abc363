package datastore

import (
	"strings"
	"testing"
)

func TestWireGuardForNodeOverridesCluster(t *testing.T) {
	on, off := true, false
	cases := []struct {
		configs []FelixConfiguration
		node    string
		want    bool
	}{
		{nil, "a", false},
		{[]FelixConfiguration{{Name: "default", WireguardEnabled: &on}}, "a", true},
		{[]FelixConfiguration{{Name: "node.a", WireguardEnabled: &off}, {Name: "default", WireguardEnabled: &on}}, "a", false},
		{[]FelixConfiguration{{Name: "node.a", WireguardEnabled: &off}, {Name: "default", WireguardEnabled: &on}}, "b", true},
		{[]FelixConfiguration{{Name: "node.b", WireguardEnabled: &on}}, "b", true},
		{[]FelixConfiguration{{Name: "default"}, {Name: "node.b"}}, "b", false}, // unset is no opinion
	}
	for i, c := range cases {
		if got := WireGuardFor(c.node, c.configs); got != c.want {
			t.Errorf("case %d: WireGuardFor(%s) = %v, want %v", i, c.node, got, c.want)
		}
	}
}

func TestWireGuardRecordsAreChecked(t *testing.T) {
	for _, name := range []string{"default", "node.node01"} {
		if err := (FelixConfiguration{Name: name}).Check(FelixConfigKey(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"", "cluster", "node.", "node.bad name"} {
		if err := (FelixConfiguration{Name: name}).Check(""); err == nil || !strings.Contains(err.Error(), "default or node.NODENAME") {
			t.Errorf("FelixConfiguration %q must be refused naming the fix: %v", name, err)
		}
	}
	if err := (FelixConfiguration{Name: "default"}).Check(FelixConfigKey("node.x")); err == nil {
		t.Error("a record under another name's key must be refused")
	}
	good := Node{Name: "n1", WireguardPublicKey: "qNm2nVq3Ck7k5cLdAr0KqTgdsK6mKq4Xj6P1qIbQn0Y="}
	if err := good.Check(NodeKey("n1")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"not a key", "c2hvcnQ=", good.WireguardPublicKey + "AAAA"} {
		bad := Node{Name: "n1", WireguardPublicKey: k}
		if err := bad.Check(NodeKey("n1")); err == nil || !strings.Contains(err.Error(), "wireguardPublicKey") {
			t.Errorf("key %q must be refused naming the field: %v", k, err)
		}
	}
}

// The Go runtime settings: Felix's default GC threshold, the cluster's,
// then the node's, field by field; bad values refused naming the field.
func TestGoRuntimeSettings(t *testing.T) {
	n := func(v int) *int { return &v }
	cases := []struct {
		configs     []FelixConfiguration
		gc, limitMB int
	}{
		{nil, DefaultGoGC, -1},
		{[]FelixConfiguration{{Name: "default", GoGCThreshold: n(100)}}, 100, -1},
		{[]FelixConfiguration{{Name: "node.a", GoGCThreshold: n(20)}, {Name: "default", GoGCThreshold: n(100), GoMemoryLimitMB: n(64)}}, 20, 64},
		{[]FelixConfiguration{{Name: "node.b", GoGCThreshold: n(20)}, {Name: "default", GoMemoryLimitMB: n(64)}}, DefaultGoGC, 64},
	}
	for i, c := range cases {
		if gc, lim := GoRuntime("a", c.configs); gc != c.gc || lim != c.limitMB {
			t.Errorf("case %d: GoRuntime(a) = %d, %d; want %d, %d", i, gc, lim, c.gc, c.limitMB)
		}
	}
	for _, c := range []struct {
		cfg  FelixConfiguration
		want string
	}{
		{FelixConfiguration{Name: "default", GoGCThreshold: n(0)}, "spec.goGCThreshold 0"},
		{FelixConfiguration{Name: "default", GoGCThreshold: n(-5)}, "spec.goGCThreshold -5"},
		{FelixConfiguration{Name: "default", GoGCThreshold: n(-1)}, "needs spec.goMemoryLimitMB"},
		{FelixConfiguration{Name: "default", GoMemoryLimitMB: n(0)}, "spec.goMemoryLimitMB 0"},
	} {
		if err := c.cfg.Check(""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v; want an error naming %q", c.cfg, err, c.want)
		}
	}
	if err := (FelixConfiguration{Name: "default", GoGCThreshold: n(-1), GoMemoryLimitMB: n(64)}).Check(""); err != nil {
		t.Errorf("-1 with a memory limit: %v", err)
	}
}
