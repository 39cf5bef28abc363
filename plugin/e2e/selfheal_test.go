package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// Rules that can be flushed come back by themselves: after each flush an
// operator or a package script might run, tabby's nftables table and its
// iptables chains and jumps are back within 10 s with no etcd change, and
// with them isolation (net2 cannot reach net1) and connectivity (net1
// reaches net1).
func TestReliabilityRulesFlushed(t *testing.T) {
	const fault = "rules flushed"
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	createEverywhere(t, l, h, "net1")
	createEverywhere(t, l, h, "net2")
	must(t, h, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, h, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	must(t, h, "run", "--net", "net2", "--name", "containerC", "-tid", "busybox")
	ipB := ipOf(t, h, "containerB", "net1")
	eventually(t, 10*time.Second, "containerA reaches containerB", func() (string, bool) { return pings(h, "containerA", ipB) })
	if out, ok := pings(h, "containerC", ipB); ok {
		t.Fatalf("net2 reaches net1 before any flush:\n%s", out)
	}
	rulesBack := func() (string, bool) {
		tables, _ := h.Exec("nft", "list", "tables")
		fwd, _ := h.Exec("iptables", "-S", "FORWARD")
		nat, _ := h.Exec("iptables", "-t", "nat", "-S", "POSTROUTING")
		return tables + "\n" + fwd + "\n" + nat, strings.Contains(tables, "table inet tabby") &&
			strings.Contains(fwd, "-j TABBY-FORWARD") && strings.Contains(nat, "-j TABBY-NAT-OUTGOING")
	}
	for _, flush := range [][]string{
		{"nft", "flush", "ruleset"},
		{"nft", "delete", "table", "inet", "tabby"},
		{"iptables", "-F", "FORWARD"},
		{"iptables", "-t", "nat", "-F", "POSTROUTING"},
	} {
		what := strings.Join(flush, " ")
		mustExec(t, h, flush...)
		start := time.Now()
		var state string
		back := false
		for !back && time.Since(start) < 15*time.Second {
			time.Sleep(100 * time.Millisecond)
			state, back = rulesBack()
		}
		took := time.Since(start).Round(100 * time.Millisecond)
		report(t, fault, what+": tabby's table, chains and jumps back", fmt.Sprintf("after %s", took), back && took <= 10*time.Second)
		if !back {
			t.Fatalf("after %s: not back in 15 s:\n%s", what, state)
		}
		if out, ok := pings(h, "containerC", ipB); ok {
			t.Fatalf("after %s: net2 reaches net1 once the rules are back:\n%s", what, out)
		}
		mustPing(t, h, "containerA", ipB)
	}
}
