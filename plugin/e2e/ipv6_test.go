package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
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

// IPv6-only networks (Docker 28+: --ipv4=false --ipv6): endpoints get a
// /128 and no IPv4 address, route via fe80::1, reach each other across
// hosts over the IPv6 BGP routes, the network is mirrored IPv6-only, two
// such networks stay isolated unless a policy allows it, and names resolve
// across hosts (AAAA) through the resolver on the host's IPv6 address.
func TestIPv6OnlyNetwork(t *testing.T) {
	if os.Getenv("TABBY_DOCKER_MAJOR") != "29" {
		t.Skip("--ipv4=false is Docker 28+: make e2e-29 (run by make test) runs this")
	}
	l := lab.New(t, lab.Options{Hosts: 2, IPv6: true, DNS: true})
	fakeUpstream(t, l)
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "v6a", "--ipv4=false", "--ipv6")
	createEverywhere(t, l, n0, "v6b", "--ipv4=false", "--ipv6")
	if v4 := must(t, n1, "network", "inspect", "-f", "{{.EnableIPv4}} {{.EnableIPv6}}", "v6a"); v4 != "false true" {
		t.Fatalf("the mirror of v6a on node01 is IPv4 %s", v4)
	}
	must(t, n0, "run", "--net", "v6a", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "v6a", "--name", "containerC", "-tid", "busybox")
	must(t, n1, "run", "--net", "v6b", "--name", "containerD", "-tid", "busybox")
	ipA, ipC := ip6Of(t, n0, "containerA", "v6a"), ip6Of(t, n1, "containerC", "v6a")
	if !netip.MustParsePrefix("fd00:192:168::/48").Contains(netip.MustParseAddr(ipA)) {
		t.Fatalf("containerA has %q, want an address of the default IPv6 pool", ipA)
	}
	if a := must(t, n0, "exec", "containerA", "ip", "-4", "addr", "show", "dev", "cali0"); strings.Contains(a, "inet ") {
		t.Fatalf("an IPv6-only endpoint has an IPv4 address:\n%s", a)
	}
	if r := must(t, n0, "exec", "containerA", "ip", "-6", "route"); !strings.Contains(r, "default via fe80::1 dev cali0") {
		t.Fatalf("containerA's IPv6 routes lack `default via fe80::1 dev cali0`:\n%s", r)
	}
	eventually(t, 30*time.Second, "containerA reaches containerC over IPv6 across hosts", func() (string, bool) {
		return pings(n0, "containerA", ipC)
	})
	if out, ok := pings(n1, "containerD", ipC); ok {
		t.Fatalf("v6b reaches v6a: networks are not isolated:\n%s", out)
	}
	eventually(t, 30*time.Second, "containerA resolves containerC (AAAA) on node01", func() (string, bool) {
		out, _ := n0.Docker("exec", "containerA", "nslookup", "-type=AAAA", "containerC")
		return out, strings.Contains(out, ipC)
	})
	if out, _ := n0.Docker("exec", "containerA", "nslookup", "-type=AAAA", "containerD"); strings.Contains(out, ip6Of(t, n1, "containerD", "v6b")) {
		t.Fatalf("containerA (v6a) resolved containerD (v6b):\n%s", out)
	}
	policy := filepath.Join(l.Dir, "allow-v6b.yaml")
	os.WriteFile(policy, []byte(`apiVersion: tabby/v1
kind: NetworkPolicy
metadata: {name: allow-v6b}
spec:
  selector: tabby.network == 'v6a'
  order: 100
  ingress:
  - action: Allow
    source: {selector: tabby.network == 'v6b'}
`), 0o644)
	mustTabby(t, n0, "apply", "-f", policy)
	eventually(t, 20*time.Second, "the policy lets v6b reach v6a over IPv6", func() (string, bool) {
		return pings(n1, "containerD", ipC)
	})
	mustTabby(t, n0, "delete", "policy", "allow-v6b")
	eventually(t, 20*time.Second, "v6b is cut off again once the policy is gone", func() (string, bool) {
		out, ok := pings(n1, "containerD", ipC)
		return out, !ok
	})
	must(t, n0, "rm", "-f", "containerA")
	must(t, n1, "rm", "-f", "containerC", "containerD")
	if out := mustTabby(t, n0, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
		t.Fatalf("ipam check:\n%s", out)
	}
}
