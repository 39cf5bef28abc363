package e2e

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// A container on the pool-wide --subnet network and on a network without
// --subnet, which draws from the same (only) pool. Users give the default
// pool as --subnet to use --ip on Docker 20.10. Docker refuses to program
// an address that a main-table route of the container covers ("conflicts
// with existing route"), so the pool's subnet route must be out of its
// sight (table 77) when the second network joins; it still routes.
func TestPoolWideSubnetBesidePoolNetwork(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	pool := netip.MustParsePrefix("192.168.0.0/16")
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", pool.String(), "netpool")
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "netany")
	must(t, h, "run", "-d", "--net", "netpool", "--name", "peerP", "busybox", "sleep", "3600")
	must(t, h, "run", "-d", "--net", "netany", "--name", "peerA", "busybox", "sleep", "3600")

	must(t, h, "run", "-d", "--net", "netpool", "--name", "ctrP", "busybox", "sleep", "3600")
	must(t, h, "network", "connect", "netany", "ctrP")
	if ip := netip.MustParseAddr(ipOf(t, h, "ctrP", "netany")); !pool.Contains(ip) {
		t.Fatalf("netany gave ctrP %s, outside the only pool %s", ip, pool)
	}
	r := must(t, h, "exec", "ctrP", "ip", "route", "show", "table", "77")
	if !strings.Contains(r, "192.168.0.0/16 via 169.254.1.1 dev cali0") {
		main, _ := h.Docker("exec", "ctrP", "ip", "route")
		t.Fatalf("ctrP's pool route should be in table 77 after joining netany:\n%s\nmain table:\n%s", r, main)
	}
	if main := must(t, h, "exec", "ctrP", "ip", "route"); strings.Contains(main, "192.168.0.0/16") {
		t.Fatalf("the pool route is still in ctrP's main table:\n%s", main)
	}
	// The pool route still carries ctrP's own connections to netpool
	// (peerP admits only netpool's addresses), and netany's peers reach
	// its netany address.
	mustPing(t, h, "ctrP", ipOf(t, h, "peerP", "netpool"))
	mustPing(t, h, "peerA", ipOf(t, h, "ctrP", "netany"))
	// Disconnecting and connecting again works too (the route was set
	// aside once; nothing is left to move).
	must(t, h, "network", "disconnect", "netany", "ctrP")
	must(t, h, "network", "connect", "netany", "ctrP")
	mustPing(t, h, "peerA", ipOf(t, h, "ctrP", "netany"))

	// The other order: the network without --subnet first.
	must(t, h, "run", "-d", "--net", "netany", "--name", "ctrQ", "busybox", "sleep", "3600")
	must(t, h, "network", "connect", "netpool", "ctrQ")
	mustPing(t, h, "ctrQ", ipOf(t, h, "peerP", "netpool"))
	mustPing(t, h, "peerA", ipOf(t, h, "ctrQ", "netany"))

	must(t, h, "rm", "-f", "peerP", "peerA", "ctrP", "ctrQ")
	must(t, h, "network", "rm", "netpool", "netany")
	if out := mustTabby(t, h, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
		t.Fatalf("ipam check after removing everything:\n%s", out)
	}
}
