package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// The IPIP tests need the kernel's ipip module: this machine's kernel has
// none, so they skip here and run in make test-kernel's guest.

// IPIP Always (seed 000's second table): routes to other hosts' blocks go
// `via HOSTIP dev tunl0 onlink`, containers leave room for the 20-byte
// header; then IPIP -> VXLAN and back while the containers run.
func TestIPIP(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	if !kernelHasIPIP(n0) {
		lab.SkipForKernel(t, "this kernel has no ipip module (ip link add type ipip fails)")
	}
	pool := "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: tun}\nspec: {cidr: 10.80.0.0/16, %s}\n"
	applyYAML(t, l, n0, "ipip.yaml", strings.Replace(pool, "%s", "ipipMode: Always", 1))
	createEverywhere(t, l, n0, "ipnet", "--subnet", "10.80.0.0/16")
	must(t, n0, "run", "--net", "ipnet", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "ipnet", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ipOf(t, n0, "containerA", "ipnet"), ipOf(t, n1, "containerC", "ipnet")
	overTunl0 := func(h *lab.Host, block, via string) {
		t.Helper()
		want := block + " via " + via + " dev tunl0 proto 77 onlink"
		eventually(t, 30*time.Second, h.Name+" routes "+block+" over tunl0", func() (string, bool) {
			r, _ := h.Exec("ip", "route")
			return r, strings.Contains(r, want)
		})
	}
	overTunl0(n0, blockOf(ipC), n1.Addr)
	overTunl0(n1, blockOf(ipA), n0.Addr)
	if c := must(t, n0, "exec", "containerA", "ip", "link", "show", "cali0"); !strings.Contains(c, "mtu 1480") {
		t.Fatalf("container MTU should leave room for IPIP:\n%s", c)
	}
	if a := mustExec(t, n0, "ip", "-4", "addr", "show", "tunl0"); !regexp.MustCompile(`inet 10\.80\.\d+\.\d+/32`).MatchString(a) {
		t.Fatalf("tunl0 should carry the node's tunnel address from the pool:\n%s", a)
	}
	mustPing(t, n0, "containerA", ipC)
	// A full-size packet crosses: 1480 bytes less IP and ICMP headers.
	if out, err := n0.Docker("exec", "containerA", "ping", "-c", "2", "-W", "3", "-s", "1452", ipC); err != nil {
		t.Fatalf("a 1480-byte packet over IPIP: %v\n%s", err, out)
	}

	// IPIP -> VXLAN while containers run: the routes move to vxlan.tabby.
	applyYAML(t, l, n0, "ipip.yaml", strings.Replace(pool, "%s", "vxlanMode: Always", 1))
	eventually(t, 30*time.Second, "node00 routes node01's block over vxlan.tabby, not tunl0", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, regexp.MustCompile(regexp.QuoteMeta(blockOf(ipC))+` via 10\.80\.\S+ dev vxlan\.tabby`).MatchString(r) && !strings.Contains(r, "tunl0")
	})
	mustPing(t, n0, "containerA", ipC)

	// And back: vxlan.tabby goes, tunl0 carries the block again.
	applyYAML(t, l, n0, "ipip.yaml", strings.Replace(pool, "%s", "ipipMode: Always", 1))
	overTunl0(n0, blockOf(ipC), n1.Addr)
	eventually(t, 30*time.Second, "vxlan.tabby is removed once no pool uses VXLAN", func() (string, bool) {
		out, _ := n0.Exec("ip", "-o", "link")
		return out, !strings.Contains(out, "vxlan.tabby")
	})
	mustPing(t, n0, "containerA", ipC)
	mustPing(t, n1, "containerC", ipA)
}

// IPIP CrossSubnet: node00 and node01 share a subnet and route to each
// other directly; node02 sits behind a router on another subnet, reached
// only through tunl0.
func TestIPIPCrossSubnet(t *testing.T) {
	l := crossSubnetLab(t)
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	if !kernelHasIPIP(n0) {
		lab.SkipForKernel(t, "this kernel has no ipip module (ip link add type ipip fails)")
	}
	applyYAML(t, l, n0, "ipip.yaml", "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: tun}\nspec: {cidr: 10.81.0.0/16, ipipMode: CrossSubnet}\n")
	createEverywhere(t, l, n0, "ipnet", "--subnet", "10.81.0.0/16")
	for i, h := range l.Hosts {
		must(t, h, "run", "--net", "ipnet", "--name", "c"+strconv.Itoa(i), "-tid", "busybox")
	}
	ip0, ip1, ip2 := ipOf(t, n0, "c0", "ipnet"), ipOf(t, n1, "c1", "ipnet"), ipOf(t, n2, "c2", "ipnet")
	eventually(t, 30*time.Second, "node00: direct to node01, tunl0 to node02", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip1)+" via "+n1.Addr+" dev eth0 proto 77") &&
			strings.Contains(r, blockOf(ip2)+" via "+n2.Addr+" dev tunl0 proto 77 onlink")
	})
	eventually(t, 30*time.Second, "node02 tunnels to both", func() (string, bool) {
		r, _ := n2.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ip0)+" via "+n0.Addr+" dev tunl0 proto 77 onlink") &&
			strings.Contains(r, blockOf(ip1)+" via "+n1.Addr+" dev tunl0 proto 77 onlink")
	})
	if c := must(t, n1, "exec", "c1", "ip", "link", "show", "cali0"); !strings.Contains(c, "mtu 1480") {
		t.Fatalf("a CrossSubnet pool's containers leave room for IPIP:\n%s", c)
	}
	mustPing(t, n0, "c0", ip1)
	mustPing(t, n0, "c0", ip2)
	mustPing(t, n2, "c2", ip1)
}
