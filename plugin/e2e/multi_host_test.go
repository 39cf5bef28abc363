package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// blockOf returns the /26 that holds ip.
func blockOf(ip string) string {
	p, _ := netip.MustParseAddr(ip).Prefix(26)
	return p.String()
}

// Seed 001's lab: node00..node02 share one etcd; net1 and net2 made on
// node00 appear everywhere; containerA,B on node00 and C,D on node01 reach
// each other across hosts over routes learned by BGP.
func TestSeed001ThreeHosts(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 3})
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]

	t.Run("networks created on one host appear on every host", func(t *testing.T) {
		createEverywhere(t, l, n0, "net1")
		createEverywhere(t, l, n0, "net2")
	})

	var ipA, ipB, ipC, ipD string
	t.Run("containers of one network ping each other across hosts", func(t *testing.T) {
		must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
		must(t, n0, "run", "--net", "net2", "--name", "containerB", "-tid", "busybox")
		must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
		must(t, n1, "run", "--net", "net2", "--name", "containerD", "-tid", "busybox")
		ipA, ipB = ipOf(t, n0, "containerA", "net1"), ipOf(t, n0, "containerB", "net2")
		ipC, ipD = ipOf(t, n1, "containerC", "net1"), ipOf(t, n1, "containerD", "net2")
		eventually(t, 30*time.Second, "containerA reaches containerC across hosts", func() (string, bool) {
			return pings(n0, "containerA", ipC)
		})
		mustPing(t, n1, "containerC", ipA)
		mustPing(t, n0, "containerB", ipD)
		mustPing(t, n1, "containerD", ipB)
	})

	t.Run("host routes: other hosts' blocks via their address, our block blackholed", func(t *testing.T) {
		r0 := mustExec(t, n0, "ip", "route")
		r1 := mustExec(t, n1, "ip", "route")
		if !strings.Contains(r0, blockOf(ipC)+" via "+n1.Addr+" dev eth0 proto 77") {
			t.Fatalf("node00 lacks `%s via %s dev eth0 proto 77`:\n%s", blockOf(ipC), n1.Addr, r0)
		}
		if !strings.Contains(r1, blockOf(ipA)+" via "+n0.Addr+" dev eth0 proto 77") {
			t.Fatalf("node01 lacks `%s via %s`:\n%s", blockOf(ipA), n0.Addr, r1)
		}
		if !strings.Contains(r0, "blackhole "+blockOf(ipA)+" proto 77") {
			t.Fatalf("node00 lacks the blackhole of its block %s:\n%s", blockOf(ipA), r0)
		}
		r2 := mustExec(t, n2, "ip", "route")
		for _, want := range []string{blockOf(ipA) + " via " + n0.Addr, blockOf(ipC) + " via " + n1.Addr} {
			if !strings.Contains(r2, want) {
				t.Fatalf("node02 (no containers) lacks %q:\n%s", want, r2)
			}
		}
	})

	t.Run("node status shows two established mesh peers", func(t *testing.T) {
		eventually(t, 30*time.Second, "two Established mesh peers on node00", func() (string, bool) {
			out, _ := n0.Tabby("node", "status")
			ok := strings.HasPrefix(out, "tabby process is running.") &&
				meshPeerUp(out, n1.Addr) &&
				meshPeerUp(out, n2.Addr) &&
				strings.Contains(out, "IPv6 BGP status\nNo IPv6 peers found.")
			return out, ok
		})
		t.Log("\n" + mustTabby(t, n0, "node", "status"))
		t.Log("\n" + mustExec(t, n0, "ip", "route"))
		nodes := mustTabby(t, n0, "get", "nodes")
		for _, h := range l.Hosts {
			if !strings.Contains(nodes, h.Name) || !strings.Contains(nodes, h.Addr+"/24") {
				t.Fatalf("get nodes lacks %s %s/24:\n%s", h.Name, h.Addr, nodes)
			}
		}
	})

	t.Run("ipam show, check and release", func(t *testing.T) {
		show := mustTabby(t, n0, "ipam", "show")
		if !regexp.MustCompile(regexp.QuoteMeta(blockOf(ipA)) + `\s+default-ipv4-ippool\s+node00\s+\d+`).MatchString(show) {
			t.Fatalf("ipam show lacks node00's block %s:\n%s", blockOf(ipA), show)
		}
		if out := mustTabby(t, n0, "ipam", "show", "--ip", ipC); !strings.Contains(out, "on node01") {
			t.Fatalf("ipam show --ip %s should name node01's endpoint:\n%s", ipC, out)
		}
		if out := mustTabby(t, n1, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
			t.Fatalf("ipam check on a healthy cluster:\n%s", out)
		}
		// A leak, as a crash between IPAM and the endpoint record would leave.
		st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		leak := netip.MustParsePrefix(blockOf(ipA)).Addr().Next().Next().Next().Next().Next() // .5 of node00's block
		if err := ipamdriver.NewAllocator(st, "node00").Assign(context.Background(), leak, "docker-leaked"); err != nil {
			t.Fatal(err)
		}
		out, err := n0.Tabby("ipam", "check")
		if err == nil || !strings.Contains(out, "leaked") || !strings.Contains(out, leak.String()) {
			t.Fatalf("ipam check must report the leak %s and fail: %v\n%s", leak, err, out)
		}
		if out, err := n0.Tabby("ipam", "release", "--ip", ipA); err == nil || !strings.Contains(out, "in use") {
			t.Fatalf("releasing an address in use must be refused: %v\n%s", err, out)
		}
		mustTabby(t, n0, "ipam", "release", "--ip", leak.String())
		if out := mustTabby(t, n0, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
			t.Fatalf("after release:\n%s", out)
		}
	})

	t.Run("a block's route stays after its last container goes", func(t *testing.T) {
		must(t, n1, "rm", "-f", "containerC")
		mustPing(t, n0, "containerB", ipD) // the block (and its route) stay with node01
	})

	t.Run("network removed where it was made is removed everywhere", func(t *testing.T) {
		must(t, n1, "rm", "-f", "containerD")
		must(t, n0, "rm", "-f", "containerB")
		must(t, n0, "network", "rm", "net2")
		for _, h := range []*lab.Host{n1, n2} {
			eventually(t, 15*time.Second, "net2 gone from "+h.Name, func() (string, bool) {
				out, _ := h.Docker("network", "ls", "--format", "{{.Name}}")
				return out, !strings.Contains(out, "net2")
			})
		}
		eventually(t, 5*time.Second, "profile net2 removed with the last net2", func() (string, bool) {
			p, _ := n0.Tabby("get", "profiles")
			return p, !strings.Contains(p, "net2")
		})
		if p := mustTabby(t, n0, "get", "profiles"); !strings.Contains(p, "net1") {
			t.Fatalf("profile net1 must stay:\n%s", p)
		}
	})
}

// A host's daemon crashes and comes back while its containers are pinged
// from another host: peers keep its routes by graceful restart, so no
// packet is lost, and the route is still there after the restart.
func TestGracefulRestartKeepsRoutes(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipC := ipOf(t, n1, "containerC", "net1")
	route := blockOf(ipC) + " via " + n1.Addr
	eventually(t, 30*time.Second, "route to node01's block", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, route)
	})
	for _, stop := range []func(){n1.KillTabby, n1.StopTabby} {
		// ~6 s of pings at 0.2 s spacing straddle the outage and the restart.
		done := make(chan string, 1)
		go func() {
			out, _ := n0.Docker("exec", "containerA", "ping", "-c", "30", "-i", "0.2", "-W", "1", ipC)
			done <- out
		}()
		time.Sleep(time.Second)
		stop()
		time.Sleep(2 * time.Second)
		if r, _ := n0.Exec("ip", "route"); !strings.Contains(r, route) {
			t.Fatalf("node00 dropped %q while node01's daemon was down:\n%s", route, r)
		}
		n1.StartTabby()
		out := <-done
		if !strings.Contains(out, "30 packets transmitted, 30 packets received") {
			t.Fatalf("packets lost across node01's daemon restart:\n%s", out)
		}
	}
	eventually(t, 30*time.Second, "sessions re-established", func() (string, bool) {
		out, _ := n0.Tabby("node", "status")
		return out, strings.Contains(out, "Established")
	})
	if r, _ := n0.Exec("ip", "route"); !strings.Contains(r, route) {
		t.Fatalf("route gone after the restart:\n%s", r)
	}
}

// When the pool has no free block, a host borrows an address from another
// host's block and advertises it as a /32, which is more specific than the
// owner's blackhole; removing the container withdraws it.
func TestBorrowedAddressIsAdvertised(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	applyYAML(t, l, n0, "small.yaml", "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: small}\nspec: {cidr: 10.60.0.0/29, blockSize: 30}\n")
	createEverywhere(t, l, n0, "small", "--subnet", "10.60.0.0/29")
	// node00 leaves one address of its block free; node01 fills its own.
	for i := 0; i < 4; i++ {
		if i < 3 {
			must(t, n0, "run", "--net", "small", "--name", fmt.Sprintf("a%d", i), "-tid", "busybox")
		}
		must(t, n1, "run", "--net", "small", "--name", fmt.Sprintf("b%d", i), "-tid", "busybox")
	}
	must(t, n1, "run", "--net", "small", "--name", "borrower", "-tid", "busybox")
	ip := ipOf(t, n1, "borrower", "small")
	owner := blockOf30(ip)
	if owner != blockOf30(ipOf(t, n0, "a0", "small")) {
		t.Fatalf("borrower got %s, which is not in node00's block %s", ip, blockOf30(ipOf(t, n0, "a0", "small")))
	}
	eventually(t, 30*time.Second, "node00 routes the borrowed /32 to node01", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, ip+" via "+n1.Addr+" dev eth0 proto 77")
	})
	// The replies go back by node00's block, which node01 takes once it
	// knows the new pool (a node's prefix outside every pool is refused).
	eventually(t, 30*time.Second, "node01 routes node00's block back", func() (string, bool) {
		r, _ := n1.Exec("ip", "route")
		return r, strings.Contains(r, owner+" via "+n0.Addr+" dev eth0 proto 77")
	})
	mustPing(t, n0, "a0", ip)
	must(t, n1, "rm", "-f", "borrower")
	eventually(t, 30*time.Second, "the /32 is withdrawn", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, !strings.Contains(r, ip+" via")
	})
}

func blockOf30(ip string) string {
	p, _ := netip.MustParseAddr(ip).Prefix(30)
	return p.String()
}
