package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// ip6Of returns a container's IPv6 address on a network.
func ip6Of(t *testing.T, h *lab.Host, ctr, netName string) string {
	t.Helper()
	return must(t, h, "inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).GlobalIPv6Address}}", netName), ctr)
}

// block6Of returns the /122 that holds ip.
func block6Of(ip string) string {
	p, _ := netip.MustParseAddr(ip).Prefix(122)
	return p.String()
}

// Dual stack across hosts: `docker network create --ipv6` gives endpoints
// an IPv4 /32 and an IPv6 /128 from the default IPv6 pool's /122 blocks,
// the container routes IPv6 via fe80::1 on cali0, the hosts learn each
// other's IPv6 blocks over IPv6 BGP sessions, and node status lists those
// sessions in its IPv6 section.
func TestDualStack(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 3, IPv6: true})
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	createEverywhere(t, l, n0, "dual", "--ipv6")
	createEverywhere(t, l, n0, "dual2", "--ipv6", "--subnet", "192.168.200.0/24", "--subnet", "fd00:192:168:20::/64")

	must(t, n0, "run", "--net", "dual", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "dual", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ip6Of(t, n0, "containerA", "dual"), ip6Of(t, n1, "containerC", "dual")
	pool := netip.MustParsePrefix("fd00:192:168::/48")
	for ctr, ip := range map[string]string{"containerA": ipA, "containerC": ipC} {
		a, err := netip.ParseAddr(ip)
		if err != nil || !pool.Contains(a) {
			t.Fatalf("%s has IPv6 address %q, want one in the default IPv6 pool %s", ctr, ip, pool)
		}
	}
	if v4 := ipOf(t, n0, "containerA", "dual"); !strings.HasPrefix(v4, "192.168.") {
		t.Fatalf("containerA has IPv4 address %q, want one from the default IPv4 pool: dual stack", v4)
	}

	t.Run("container side: /128 on cali0, default via fe80::1", func(t *testing.T) {
		addr := must(t, n0, "exec", "containerA", "ip", "-6", "addr", "show", "dev", "cali0")
		if !strings.Contains(addr, "inet6 "+ipA+"/128") {
			t.Fatalf("cali0 lacks %s/128:\n%s", ipA, addr)
		}
		if r := must(t, n0, "exec", "containerA", "ip", "-6", "route"); !strings.Contains(r, "default via fe80::1 dev cali0") {
			t.Fatalf("containerA's IPv6 routes lack `default via fe80::1 dev cali0`:\n%s", r)
		}
	})

	t.Run("IPv6 ping across hosts", func(t *testing.T) {
		eventually(t, 30*time.Second, "containerA reaches containerC over IPv6", func() (string, bool) {
			return pings(n0, "containerA", ipC)
		})
		mustPing(t, n1, "containerC", ipA)
	})

	t.Run("host IPv6 routes: other hosts' /122 via their IPv6 address, ours blackholed", func(t *testing.T) {
		r0 := mustExec(t, n0, "ip", "-6", "route")
		if want := block6Of(ipC) + " via " + n1.Addr6 + " dev eth0 proto 77"; !strings.Contains(r0, want) {
			t.Fatalf("node00 lacks `%s`:\n%s", want, r0)
		}
		if want := "blackhole " + block6Of(ipA) + " dev lo proto 77"; !strings.Contains(r0, want) {
			t.Fatalf("node00 lacks `%s`:\n%s", want, r0)
		}
		if want := ipA + " dev cali"; !strings.Contains(r0, want) {
			t.Fatalf("node00 lacks the endpoint route `%s...`:\n%s", want, r0)
		}
		r2 := mustExec(t, n2, "ip", "-6", "route")
		for _, want := range []string{block6Of(ipA) + " via " + n0.Addr6, block6Of(ipC) + " via " + n1.Addr6} {
			if !strings.Contains(r2, want) {
				t.Fatalf("node02 (no containers) lacks %q:\n%s", want, r2)
			}
		}
	})

	t.Run("node status lists the IPv6 mesh sessions", func(t *testing.T) {
		eventually(t, 30*time.Second, "two Established IPv6 mesh peers on node00", func() (string, bool) {
			out, _ := n0.Tabby("node", "status")
			_, v6, _ := strings.Cut(out, "IPv6 BGP status")
			ok := true
			for _, h := range []*lab.Host{n1, n2} {
				ok = ok && meshPeerUp(v6, h.Addr6)
			}
			return out, ok
		})
		t.Log("\n" + mustTabby(t, n0, "node", "status"))
		if nodes := mustTabby(t, n0, "get", "nodes"); !strings.Contains(nodes, n1.Addr6) {
			t.Fatalf("get nodes lacks node01's IPv6 address %s:\n%s", n1.Addr6, nodes)
		}
	})

	t.Run("an IPv6 subnet and --ip6 on a mirrored network", func(t *testing.T) {
		must(t, n1, "run", "--net", "dual2", "--ip6", "fd00:192:168:20::77", "--name", "containerE", "-tid", "busybox")
		must(t, n0, "run", "--net", "dual2", "--name", "containerF", "-tid", "busybox")
		if ip := ip6Of(t, n1, "containerE", "dual2"); ip != "fd00:192:168:20::77" {
			t.Fatalf("containerE has %q, want the --ip6 fd00:192:168:20::77", ip)
		}
		ipF := ip6Of(t, n0, "containerF", "dual2")
		if !netip.MustParsePrefix("fd00:192:168:20::/64").Contains(netip.MustParseAddr(ipF)) {
			t.Fatalf("containerF has %q, outside the network's IPv6 subnet", ipF)
		}
		eventually(t, 30*time.Second, "containerE reaches containerF over IPv6", func() (string, bool) {
			return pings(n1, "containerE", ipF)
		})
	})

	t.Run("removing containers removes their IPv6 endpoint routes", func(t *testing.T) {
		must(t, n0, "rm", "-f", "containerA", "containerF")
		must(t, n1, "rm", "-f", "containerC", "containerE")
		for _, h := range []*lab.Host{n0, n1} {
			if out := mustExec(t, h, "ip", "-6", "route", "show", "proto", "77"); strings.Contains(out, " dev cali") {
				t.Fatalf("%s keeps endpoint routes after the containers are gone:\n%s", h.Name, out)
			}
		}
	})
}
