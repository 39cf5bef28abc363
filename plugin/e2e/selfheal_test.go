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

// Routes come back too: after `ip route flush proto 77` on a host, the
// route table (the one writer of tabby's routes) puts back its endpoints'
// routes, its blocks' blackholes and the routes BGP learned, within 10 s
// and with no etcd change or BGP update; a learned route edited by hand is
// put right, and a route tabby did not make is left alone.
func TestReliabilityRoutesFlushed(t *testing.T) {
	const fault = "routes flushed"
	l := lab.New(t, lab.Options{Hosts: 2})
	h0, h1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, h0, "net1")
	must(t, h0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, h0, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	must(t, h1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipB, ipC := ipOf(t, h0, "containerB", "net1"), ipOf(t, h1, "containerC", "net1")
	eventually(t, 20*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(h0, "containerA", ipC) })
	mustPing(t, h0, "containerA", ipB)
	table := func() string {
		r, _ := h0.Exec("ip", "route", "show", "proto", "77")
		return r
	}
	before := table()
	learned := routesVia(h0, h1.Addr)
	if len(learned) == 0 || !strings.Contains(before, "blackhole") || !strings.Contains(before, ipB+" dev cali") {
		t.Fatalf("node00's routes lack a learned route, a blackhole or containerB's route:\n%s", before)
	}
	mustExec(t, h0, "ip", "route", "add", "10.251.0.0/24", "via", h1.Addr) // the admin's
	block := strings.Fields(learned[0])[0]
	for _, fault1 := range [][]string{
		{"ip", "route", "flush", "proto", "77"},
		{"ip", "route", "replace", block, "dev", "lo", "proto", "77"}, // edited: the block goes nowhere
	} {
		what := strings.Join(fault1, " ")
		mustExec(t, h0, fault1...)
		start := time.Now()
		now := table()
		for now != before && time.Since(start) < 15*time.Second {
			time.Sleep(100 * time.Millisecond)
			now = table()
		}
		took := time.Since(start).Round(100 * time.Millisecond)
		report(t, fault, what+": node00's tabby routes back as they were", fmt.Sprintf("after %s", took), now == before && took <= 10*time.Second)
		if now != before {
			t.Fatalf("after %s: routes not back in 15 s:\n%s\nwant\n%s", what, now, before)
		}
		mustPing(t, h0, "containerA", ipC)
		mustPing(t, h0, "containerA", ipB)
	}
	if r, _ := h0.Exec("ip", "route", "show", "10.251.0.0/24"); !strings.Contains(r, "via "+h1.Addr) {
		t.Fatalf("the admin's route was touched: %q", r)
	}
	mustExec(t, h0, "ip", "route", "del", "10.251.0.0/24")
}
