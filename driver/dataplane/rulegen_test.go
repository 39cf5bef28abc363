package dataplane

import (
	"testing"

	"github.com/vishvananda/netns"
)

// The ruleset generation stands still while nothing changes and moves on
// with any change: an nft table, and a rule iptables adds (iptables-nft).
func TestRulesetGenerationMovesWithAnyRuleChange(t *testing.T) {
	name := testNS(t)
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	gen := func() uint32 {
		t.Helper()
		g, err := RulesetGeneration(ns)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g0 := gen()
	if g := gen(); g != g0 {
		t.Fatalf("generation moved from %d to %d with no change", g0, g)
	}
	inNS(t, name, "nft", "add", "table", "inet", "probe")
	g1 := gen()
	if g1 == g0 {
		t.Fatalf("generation %d did not move with a new table", g1)
	}
	if !IPTablesOnNFTables() {
		t.Skip("iptables here is iptables-legacy: its rules are not in nftables (the daemon then checks them every time)")
	}
	inNS(t, name, "iptables", "-A", "FORWARD", "-j", "ACCEPT")
	if g := gen(); g == g1 {
		t.Fatalf("generation %d did not move with an iptables rule", g)
	}
}
