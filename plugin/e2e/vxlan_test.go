package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

var vxlanTX = regexp.MustCompile(`TX:[^\n]*\n\s*\d+\s+(\d+)`)

// txPackets reads vxlan.tabby's transmitted packet count on a host.
func txPackets(t *testing.T, h *lab.Host) int {
	t.Helper()
	m := vxlanTX.FindStringSubmatch(mustExec(t, h, "ip", "-s", "link", "show", "vxlan.tabby"))
	if m == nil {
		t.Fatal("no TX counters on vxlan.tabby")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A vxlanMode Always pool: every host gets a tunnel endpoint (an address of
// its block and a MAC in its Node), vxlan.tabby (VNI 4096, UDP 4789), and
// routes to the other hosts' blocks over it; containers reach each other
// through the tunnel. Switching the pool to Never re-programs the routes to
// plain BGP routing without restarting anything.
func TestVXLANAlwaysAndModeChange(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	pool := "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.70.0.0/16, vxlanMode: %s}\n"
	applyYAML(t, l, n0, "vx.yaml", strings.ReplaceAll(pool, "%s", "Always"))
	createEverywhere(t, l, n0, "vxnet", "--subnet", "10.70.0.0/16")
	must(t, n0, "run", "--net", "vxnet", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "vxnet", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ipOf(t, n0, "containerA", "vxnet"), ipOf(t, n1, "containerC", "vxnet")

	tunnelRE := regexp.MustCompile(`(?m)name: node01\n(?:.*\n)*?\s+vxlanTunnelAddress: (\S+)`)
	var tun1 string
	eventually(t, 15*time.Second, "node01 has a tunnel endpoint", func() (string, bool) {
		out, _ := n0.Tabby("get", "nodes", "node01", "-o", "yaml")
		if m := tunnelRE.FindStringSubmatch(out); m != nil && strings.Contains(out, "vxlanTunnelMAC: 66:") {
			tun1 = m[1]
			return out, true
		}
		return out, false
	})
	if !strings.HasPrefix(tun1, "10.70.") {
		t.Fatalf("node01's tunnel address %s is not from the VXLAN pool", tun1)
	}
	want := blockOf(ipC) + " via " + tun1 + " dev vxlan.tabby proto 77 onlink"
	eventually(t, 30*time.Second, "node00 routes node01's block through the tunnel", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, want)
	})
	if d := mustExec(t, n0, "ip", "-d", "link", "show", "vxlan.tabby"); !strings.Contains(d, "vxlan id 4096") || !strings.Contains(d, "dstport 4789") || !strings.Contains(d, "mtu 1450") {
		t.Fatalf("vxlan.tabby settings:\n%s", d)
	}
	if c := must(t, n0, "exec", "containerA", "ip", "link", "show", "cali0"); !strings.Contains(c, "mtu 1450") {
		t.Fatalf("container MTU should leave room for VXLAN:\n%s", c)
	}
	before := txPackets(t, n0)
	mustPing(t, n0, "containerA", ipC)
	mustPing(t, n1, "containerC", ipA)
	if after := txPackets(t, n0); after < before+2 {
		t.Fatalf("pings did not go through vxlan.tabby (TX %d -> %d)", before, after)
	}

	applyYAML(t, l, n0, "vx.yaml", strings.ReplaceAll(pool, "%s", "Never"))
	eventually(t, 30*time.Second, "node00 routes node01's block directly once VXLAN is off", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ipC)+" via "+n1.Addr+" dev eth0 proto 77") && !strings.Contains(r, "vxlan.tabby")
	})
	mustPing(t, n0, "containerA", ipC)
}

// crossSubnetLab: node00 and node01 on 10.99.0.0/24, node02 behind the
// lab's router on 10.98.0.0/24.
func crossSubnetLab(t *testing.T) *lab.Lab {
	return lab.New(t, lab.Options{Hosts: 3, NICs: [][]lab.NIC{
		{{Name: "eth0", CIDR: "10.99.0.10/24"}},
		{{Name: "eth0", CIDR: "10.99.0.11/24"}},
		{{Name: "eth0", CIDR: "10.98.0.12/24"}},
	}})
}

// CrossSubnet: node00 and node01 share a subnet and route to each other
// directly; node02 sits on another subnet behind a router, and traffic to
// and from it goes through the tunnel. The pool starts as Never (no route
// can reach node02's block, whose next hop is off-link) and is switched to
// CrossSubnet while containers run.
func TestVXLANCrossSubnet(t *testing.T) {
	l := crossSubnetLab(t)
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	pool := "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.70.0.0/16, vxlanMode: %s}\n"
	applyYAML(t, l, n0, "vx.yaml", strings.ReplaceAll(pool, "%s", "Never"))
	createEverywhere(t, l, n0, "vxnet", "--subnet", "10.70.0.0/16")
	for i, h := range l.Hosts {
		must(t, h, "run", "--net", "vxnet", "--name", "c"+strconv.Itoa(i), "-tid", "busybox")
	}
	ip1, ip2 := ipOf(t, n1, "c1", "vxnet"), ipOf(t, n2, "c2", "vxnet")
	eventually(t, 30*time.Second, "Never: node00 routes node01's block directly", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip1)+" via "+n1.Addr+" dev eth0 proto 77")
	})
	if out, ok := pings(n0, "c0", ip2); ok {
		t.Fatalf("Never: node02 sits behind a router that knows no container routes, yet c0 reaches c2:\n%s", out)
	}
	applyYAML(t, l, n0, "vx.yaml", strings.ReplaceAll(pool, "%s", "CrossSubnet"))
	eventually(t, 30*time.Second, "node00: direct to node01, tunnel to node02", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip1)+" via "+n1.Addr+" dev eth0 proto 77") &&
			regexp.MustCompile(regexp.QuoteMeta(blockOf(ip2))+` via 10\.70\.\S+ dev vxlan\.tabby proto 77 onlink`).MatchString(r)
	})
	eventually(t, 30*time.Second, "node02 tunnels to node00", func() (string, bool) {
		r, _ := n2.Exec("ip", "route")
		return r, regexp.MustCompile(regexp.QuoteMeta(blockOf(ipOf(t, n0, "c0", "vxnet"))) + ` via 10\.70\.\S+ dev vxlan\.tabby`).MatchString(r)
	})
	mustPing(t, n0, "c0", ip1)
	mustPing(t, n0, "c0", ip2)
	mustPing(t, n2, "c2", ip1)

	// Uninstall on node02: with no endpoint left, stopping tabby removes its
	// tunnel, learned routes and rules.
	must(t, n2, "rm", "-f", "c2")
	n2.StopTabby()
	if out := mustExec(t, n2, "ip", "-o", "link"); strings.Contains(out, "vxlan.tabby") {
		t.Fatalf("vxlan.tabby left after uninstall:\n%s", out)
	}
	if r := mustExec(t, n2, "ip", "route", "show", "proto", "77"); r != "" {
		t.Fatalf("tabby's routes left after uninstall:\n%s", r)
	}
}
