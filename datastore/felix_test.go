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
