package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

const tabbyNet = "--driver=tabby"
const tabbyIPAM = "--ipam-driver=tabby"

// hostState is what a user sees of tabby on the host: its links, routes
// and the networks and endpoints in etcd.
func hostState(t *testing.T, h *lab.Host) string {
	t.Helper()
	links := mustExec(t, h, "ip", "-o", "link", "show")
	var cali []string
	for _, l := range strings.Split(links, "\n") {
		if f := strings.Fields(l); len(f) > 1 && (strings.HasPrefix(f[1], "cali") || strings.HasPrefix(f[1], "tmp")) {
			cali = append(cali, strings.Split(f[1], "@")[0])
		}
	}
	return fmt.Sprintf("links=%v\nroutes=%s\nendpoints=%s\nnetworks=%s", cali,
		mustExec(t, h, "ip", "route", "show", "proto", "77"),
		mustTabby(t, h, "get", "workloadendpoints"), mustTabby(t, h, "get", "networks"))
}

func TestSingleHost(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]

	t.Run("network create learns the name and makes a profile", func(t *testing.T) {
		must(t, h, "network", "create", tabbyNet, tabbyIPAM, "net1")
		eventually(t, 5*time.Second, "network net1 named in etcd", func() (string, bool) {
			out, _ := h.Tabby("get", "networks")
			prof, _ := h.Tabby("get", "profiles", "net1", "-o", "yaml")
			return out + "\n" + prof, strings.Contains(out, "net1") && strings.Contains(prof, "tabby.network == 'net1'")
		})
		if scope := must(t, h, "network", "inspect", "-f", "{{.Scope}}", "net1"); scope != "local" {
			t.Fatalf("network scope %q, want local (Docker refuses global without swarm)", scope)
		}
	})

	var ipA, ipB, epA string
	t.Run("two containers get Calico-style endpoints and ping each other", func(t *testing.T) {
		must(t, h, "run", "-d", "--net", "net1", "--name", "containerA", "busybox", "sleep", "3600")
		must(t, h, "run", "-d", "--net", "net1", "--name", "containerB", "busybox", "sleep", "3600")
		ipA, ipB = ipOf(t, h, "containerA", "net1"), ipOf(t, h, "containerB", "net1")
		epA = endpointOf(t, h, "containerA", "net1")
		pool := netip.MustParsePrefix("192.168.0.0/16")
		if a, err := netip.ParseAddr(ipA); err != nil || !pool.Contains(a) {
			t.Fatalf("containerA address %q is not in the default pool %s", ipA, pool)
		}
		mustPing(t, h, "containerA", ipB)
		mustPing(t, h, "containerB", ipA)

		addr := must(t, h, "exec", "containerA", "ip", "addr", "show", "cali0")
		for _, want := range []string{"inet " + ipA + "/32", "link/ether ee:ee:ee:ee:ee:ee"} {
			if !strings.Contains(addr, want) {
				t.Fatalf("ip addr in containerA lacks %q:\n%s", want, addr)
			}
		}
		routes := must(t, h, "exec", "containerA", "ip", "route")
		for _, want := range []string{"default via 169.254.1.1 dev cali0", "169.254.1.1 dev cali0"} {
			if !strings.Contains(routes, want) {
				t.Fatalf("ip route in containerA lacks %q:\n%s", want, routes)
			}
		}
		hostRoutes := mustExec(t, h, "ip", "route")
		calif := hostIf(epA)
		if !strings.Contains(hostRoutes, ipA+" dev "+calif+" proto 77 scope link") {
			t.Fatalf("host routes lack `%s dev %s scope link` (proto 77):\n%s", ipA, calif, hostRoutes)
		}
		block := netip.MustParseAddr(ipA)
		bp, _ := block.Prefix(26)
		if !strings.Contains(hostRoutes, "blackhole "+bp.String()+" proto 77") {
			t.Fatalf("host routes lack the blackhole for block %s:\n%s", bp, hostRoutes)
		}
		if v := mustExec(t, h, "cat", "/proc/sys/net/ipv4/conf/"+calif+"/proxy_arp"); v != "1" {
			t.Fatalf("proxy_arp on %s = %s, want 1", calif, v)
		}
		fwd := mustExec(t, h, "iptables", "-S", "FORWARD")
		if !strings.Contains(fwd, "-j TABBY-FORWARD") || !strings.Contains(fwd, "-P FORWARD DROP") {
			t.Fatalf("FORWARD should keep Docker's DROP policy and jump to TABBY-FORWARD:\n%s", fwd)
		}
		wep := mustTabby(t, h, "get", "workloadendpoints", "-o", "yaml")
		for _, want := range []string{epA, "interfaceName: " + calif, ipA, "mac: ee:ee:ee:ee:ee:ee", "tabby.network: net1"} {
			if !strings.Contains(wep, want) {
				t.Fatalf("workload endpoints lack %q:\n%s", want, wep)
			}
		}
	})

	t.Run("a pool for --subnet, --ip, and docker rm releasing the address", func(t *testing.T) {
		pool := filepath.Join(l.Dir, "pool.yaml")
		os.WriteFile(pool, []byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: pool-ten}\n"+
			"spec: {cidr: 10.10.0.0/16, blockSize: 26, ipipMode: Never, vxlanMode: Never, natOutgoing: true}\n"), 0o644)
		mustTabby(t, h, "apply", "-f", pool)
		must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "10.10.0.0/16", "net3")
		must(t, h, "run", "-d", "--net", "net3", "--ip", "10.10.0.7", "--name", "fixed", "busybox", "sleep", "3600")
		if got := ipOf(t, h, "fixed", "net3"); got != "10.10.0.7" {
			t.Fatalf("--ip 10.10.0.7 gave %s", got)
		}
		if !strings.Contains(must(t, h, "exec", "fixed", "ip", "addr", "show", "cali0"), "inet 10.10.0.7/32") {
			t.Fatal("container with --ip lacks 10.10.0.7/32 on cali0")
		}
		if out, ok := pings(h, "fixed", ipA); ok { // isolation: net3 and net1 are different networks
			t.Fatalf("fixed (net3) reaches containerA (net1):\n%s", out)
		}
		before := hostState(t, h)
		out, err := h.Docker("run", "-d", "--net", "net3", "--ip", "10.10.0.7", "--name", "dup", "busybox", "sleep", "3600")
		if err == nil || !strings.Contains(out, "10.10.0.7 is already in use") {
			t.Fatalf("a second --ip 10.10.0.7 must fail saying the address is in use: %v\n%s", err, out)
		}
		h.Docker("rm", "-f", "dup")
		out, err = h.Docker("run", "-d", "--net", "net3", "--ip", "10.11.0.1", "--name", "outside", "busybox", "sleep", "3600")
		if err == nil || !strings.Contains(out, "10.11.0.1") {
			t.Fatalf("--ip outside the subnet must fail naming the address: %v\n%s", err, out)
		}
		h.Docker("rm", "-f", "outside")
		if after := hostState(t, h); after != before {
			t.Fatalf("failed runs leaked state:\nbefore: %s\nafter:  %s", before, after)
		}
		ep := endpointOf(t, h, "fixed", "net3")
		must(t, h, "rm", "-f", "fixed")
		eventually(t, 5*time.Second, "endpoint of removed container gone", func() (string, bool) {
			s := hostState(t, h)
			return s, !strings.Contains(s, hostIf(ep)) && !strings.Contains(s, "10.10.0.7")
		})
		// The address is free again: another container can take it.
		must(t, h, "run", "-d", "--net", "net3", "--ip", "10.10.0.7", "--name", "fixed2", "busybox", "sleep", "3600")
		must(t, h, "rm", "-f", "fixed2")
	})

	t.Run("a second network while containers run (no RequestPool loop)", func(t *testing.T) {
		done := make(chan error, 1)
		var out string
		go func() {
			var err error
			out, err = h.Docker("network", "create", tabbyNet, tabbyIPAM, "net2")
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("network create net2: %v\n%s", err, out)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("network create net2 hangs while tabby's /32 routes exist (Docker's RequestPool loop)")
		}
		must(t, h, "run", "-d", "--net", "net2", "--name", "containerE", "busybox", "sleep", "3600")
		mustPing(t, h, "containerE", ipOf(t, h, "containerE", "net2"))
	})

	t.Run("a container on two networks, then disconnected from one", func(t *testing.T) {
		must(t, h, "network", "connect", "net2", "containerB")
		addrs := must(t, h, "exec", "containerB", "ip", "addr")
		ipB2 := ipOf(t, h, "containerB", "net2")
		if !strings.Contains(addrs, "cali0") || !strings.Contains(addrs, "cali1") || !strings.Contains(addrs, ipB2+"/32") {
			t.Fatalf("containerB should have cali0 and cali1 (%s):\n%s", ipB2, addrs)
		}
		mustPing(t, h, "containerB", ipA)
		// containerE reaches containerB's net2 address; the reply leaves by
		// containerB's default route (cali0) from that address, which
		// anti-spoofing accepts as the container's own.
		mustPing(t, h, "containerE", ipB2)
		mustPing(t, h, "containerA", ipB)
		ep2 := endpointOf(t, h, "containerB", "net2")
		must(t, h, "network", "disconnect", "net2", "containerB")
		if addrs := must(t, h, "exec", "containerB", "ip", "addr"); strings.Contains(addrs, "cali1") {
			t.Fatalf("cali1 still in containerB after disconnect:\n%s", addrs)
		}
		if s := hostState(t, h); strings.Contains(s, hostIf(ep2)) || strings.Contains(s, ipB2+" ") {
			t.Fatalf("disconnect left the net2 endpoint behind:\n%s", s)
		}
		mustPing(t, h, "containerB", ipA)
		// Disconnecting the first network keeps the second one's route.
		must(t, h, "network", "connect", "net2", "containerA")
		must(t, h, "network", "disconnect", "net1", "containerA")
		if r := must(t, h, "exec", "containerA", "ip", "route"); !regexp.MustCompile(`default via 169\.254\.1\.\d+ dev cali1`).MatchString(r) {
			t.Fatalf("after leaving net1, containerA should route by its net2 interface:\n%s", r)
		}
		mustPing(t, h, "containerA", ipOf(t, h, "containerE", "net2"))
		must(t, h, "network", "connect", "net1", "containerA")
		ipA = ipOf(t, h, "containerA", "net1")
		mustPing(t, h, "containerB", ipA)
	})

	t.Run("a container on two --subnet networks starts connections on both", func(t *testing.T) {
		must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "192.168.252.0/24", "net4")
		must(t, h, "run", "-d", "--net", "net3", "--name", "peer3", "busybox", "sleep", "3600")
		must(t, h, "run", "-d", "--net", "net4", "--name", "peer4", "busybox", "sleep", "3600")
		must(t, h, "run", "-d", "--net", "net3", "--name", "both", "busybox", "sleep", "3600")
		must(t, h, "network", "connect", "net4", "both")
		if r := must(t, h, "exec", "both", "ip", "route"); !strings.Contains(r, "192.168.252.0/24 via 169.254.1.2 dev cali1") {
			t.Fatalf("both should route net4's subnet by its net4 interface:\n%s", r)
		}
		// Each peer's profile admits only its own network's addresses: the
		// ping to peer4 must leave by cali1, from both's net4 address.
		mustPing(t, h, "both", ipOf(t, h, "peer3", "net3"))
		mustPing(t, h, "both", ipOf(t, h, "peer4", "net4"))
		must(t, h, "rm", "-f", "peer3", "peer4", "both")
		must(t, h, "network", "rm", "net4")
	})

	t.Run("bad input is one clear error and leaves nothing behind", func(t *testing.T) {
		before := hostState(t, h)
		cases := []struct {
			args []string
			want string
		}{
			{[]string{"-o", "color=blue"}, `unknown option "color"`},
			{[]string{"--subnet", "192.0.0.0/8"}, "overlaps IP pool default-ipv4-ippool"},
			{[]string{"--subnet", "172.30.0.0/16"}, "in no tabby IP pool"},
			{[]string{"--subnet", "10.10.0.0/16", "--gateway", "10.10.0.1"}, "--gateway"},
			{[]string{"--ipv6", "--subnet", "fd00::/64"}, "IPv6"},
		}
		for _, c := range cases {
			args := append([]string{"network", "create", tabbyNet, tabbyIPAM}, c.args...)
			out, err := h.Docker(append(args, "badnet")...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("docker network create %v: want an error containing %q, got %v:\n%s", c.args, c.want, err, out)
			}
			if ls := must(t, h, "network", "ls", "--format", "{{.Name}}"); strings.Contains(ls, "badnet") {
				t.Fatalf("failed create %v left network badnet in Docker", c.args)
			}
		}
		if after := hostState(t, h); after != before {
			t.Fatalf("bad input leaked state:\nbefore: %s\nafter:  %s", before, after)
		}
	})

	t.Run("daemon restart keeps running containers connected and leaks nothing", func(t *testing.T) {
		before := hostState(t, h)
		h.StopTabby()
		mustPing(t, h, "containerA", ipB) // the kernel keeps forwarding without the daemon
		h.StartTabby()
		if after := hostState(t, h); after != before {
			t.Fatalf("restart changed state:\nbefore: %s\nafter:  %s", before, after)
		}
		mustPing(t, h, "containerA", ipB)
		h.KillTabby()
		h.StartTabby()
		must(t, h, "run", "-d", "--net", "net1", "--name", "containerC", "busybox", "sleep", "3600")
		mustPing(t, h, "containerC", ipA)
	})

	t.Run("network rm and uninstall remove everything", func(t *testing.T) {
		ids := strings.Fields(must(t, h, "ps", "-aq"))
		must(t, h, append([]string{"rm", "-f"}, ids...)...)
		for _, n := range []string{"net1", "net2", "net3"} {
			must(t, h, "network", "rm", n)
		}
		s := hostState(t, h)
		if strings.Contains(s, "cali") || strings.Contains(s, "net1") || strings.Contains(s, "192.168.") && strings.Contains(s, " dev ") {
			t.Fatalf("state left after removing every container and network:\n%s", s)
		}
		if p := mustTabby(t, h, "get", "profiles"); strings.Contains(p, "net1") {
			t.Fatalf("profile net1 left after network rm:\n%s", p)
		}
		h.StopTabby()
		if fwd := mustExec(t, h, "iptables", "-S"); strings.Contains(fwd, "TABBY") {
			t.Fatalf("tabby's rules left after it stopped with no endpoints:\n%s", fwd)
		}
		if r := mustExec(t, h, "ip", "route", "show", "proto", "77"); r != "" {
			t.Fatalf("tabby's routes left after it stopped with no endpoints:\n%s", r)
		}
	})
}
