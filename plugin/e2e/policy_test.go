package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// tcpOpen reports whether cli (a container on ch) can open a TCP connection
// to port on srv (a container on sh) at ip. A refused connection means the
// listener was not up yet and is retried; a timeout is a drop.
func tcpOpen(t *testing.T, sh *lab.Host, srv string, ch *lab.Host, cli, ip string, port int) bool {
	t.Helper()
	must(t, sh, "exec", "-d", srv, "nc", "-l", "-p", fmt.Sprint(port))
	defer sh.Docker("exec", srv, "pkill", "-f", fmt.Sprintf("nc -l -p %d", port))
	for i := 0; i < 20; i++ {
		out, err := ch.Docker("exec", cli, "sh", "-c", fmt.Sprintf("echo x | nc -w 2 %s %d", ip, port))
		if err == nil {
			return true
		}
		if !strings.Contains(out, "refused") {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// Seed 001's isolation and label policies on two hosts: containers of one
// network talk, of different networks do not (on one host and across
// hosts); a NetworkPolicy opens exactly net2 -> net1 on TCP 8080 until it is
// deleted; container labels select endpoints; a forged source is dropped.
func TestPolicy(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "net1")
	createEverywhere(t, l, n0, "net2")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "--cap-add", "NET_ADMIN", "-tid", "busybox")
	must(t, n0, "run", "--net", "net2", "--name", "containerB", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	must(t, n1, "run", "--net", "net2", "--name", "containerD", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerE", "--label", "tabby.label.role=db", "-tid", "busybox")
	ipA, ipB := ipOf(t, n0, "containerA", "net1"), ipOf(t, n0, "containerB", "net2")
	ipC, ipD := ipOf(t, n1, "containerC", "net1"), ipOf(t, n1, "containerD", "net2")
	ipE := ipOf(t, n1, "containerE", "net1")

	t.Run("same network talks, different networks do not", func(t *testing.T) {
		eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })
		mustPing(t, n1, "containerD", ipB)
		for _, c := range []struct {
			h        *lab.Host
			from, ip string
		}{{n0, "containerA", ipB}, {n0, "containerB", ipA}, {n0, "containerA", ipD}, {n1, "containerD", ipA}} {
			if out, ok := pings(c.h, c.from, c.ip); ok {
				t.Fatalf("%s reaches %s on another network:\n%s", c.from, c.ip, out)
			}
		}
	})

	t.Run("the host always reaches its own containers", func(t *testing.T) {
		for _, ip := range []string{ipA, ipB} {
			if out, err := n0.Exec("busybox", "ping", "-c", "1", "-W", "2", ip); err != nil {
				t.Fatalf("node00 cannot reach its container %s:\n%s", ip, out)
			}
		}
	})

	t.Run("profile as seed 001 shows it", func(t *testing.T) {
		out := mustTabby(t, n0, "get", "profile", "net2", "-o", "yaml")
		for _, want := range []string{"kind: Profile", "name: net2", "action: Allow", "selector: tabby.network == 'net2'"} {
			if !strings.Contains(out, want) {
				t.Fatalf("profile net2 lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("a profile edited with tabby apply", func(t *testing.T) {
		prof := "apiVersion: tabby/v1\nkind: Profile\nmetadata: {name: net2}\nspec:\n  egress: [{action: Allow}]\n" +
			"  ingress: [{action: Allow, source: {selector: \"tabby.network in {'net1', 'net2'}\"}}]\n"
		applyYAML(t, l, n0, "net2.yaml", prof)
		eventually(t, 10*time.Second, "net1's containerA reaches net2's containerB", func() (string, bool) {
			return pings(n0, "containerA", ipB)
		})
		applyYAML(t, l, n0, "net2.yaml", strings.ReplaceAll(prof, "'net1', ", ""))
		eventually(t, 10*time.Second, "net2 closed to net1 again", func() (string, bool) {
			out, ok := pings(n0, "containerA", ipB)
			return out, !ok
		})
		if !strings.Contains(mustTabby(t, n0, "get", "profile", "net2", "-o", "yaml"), "networkID: ") {
			t.Fatal("applying a profile must keep the network it belongs to")
		}
	})

	policy := "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: net2-to-net1}\n" +
		"spec:\n  selector: tabby.network == 'net1'\n  ingress:\n  - action: Allow\n    protocol: TCP\n" +
		"    source: {selector: tabby.network == 'net2'}\n    destination: {ports: [8080]}\n"
	t.Run("a policy opens net2 -> net1 on TCP 8080 only, until deleted", func(t *testing.T) {
		if tcpOpen(t, n1, "containerC", n0, "containerB", ipC, 8080) {
			t.Fatal("net2 -> net1 TCP 8080 is open before any policy")
		}
		applyYAML(t, l, n0, "pol.yaml", policy)
		if !strings.Contains(mustTabby(t, n1, "get", "policies"), "net2-to-net1") {
			t.Fatal("get policies does not list the policy")
		}
		start := time.Now()
		eventually(t, 10*time.Second, "containerB reaches containerC:8080", func() (string, bool) {
			return "", tcpOpen(t, n1, "containerC", n0, "containerB", ipC, 8080)
		})
		t.Logf("policy enforced across hosts within %s", time.Since(start).Round(time.Millisecond))
		if tcpOpen(t, n1, "containerC", n0, "containerB", ipC, 8081) {
			t.Fatal("the policy opened TCP 8081 too")
		}
		if out, ok := pings(n0, "containerB", ipC); ok {
			t.Fatalf("the policy opened ICMP too:\n%s", out)
		}
		mustTabby(t, n0, "delete", "networkpolicy", "net2-to-net1")
		eventually(t, 10*time.Second, "containerB no longer reaches containerC:8080", func() (string, bool) {
			return "", !tcpOpen(t, n1, "containerC", n0, "containerB", ipC, 8080)
		})
	})

	t.Run("container labels select endpoints", func(t *testing.T) {
		applyYAML(t, l, n0, "db.yaml", "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: to-db}\n"+
			"spec:\n  order: 10\n  selector: role == 'db'\n  ingress:\n  - action: Allow\n    protocol: TCP\n"+
			"    source: {selector: tabby.network == 'net2'}\n    destination: {ports: [9000]}\n")
		eventually(t, 10*time.Second, "containerB reaches containerE:9000 (role=db)", func() (string, bool) {
			return "", tcpOpen(t, n1, "containerE", n0, "containerB", ipE, 9000)
		})
		if tcpOpen(t, n1, "containerC", n0, "containerB", ipC, 9000) {
			t.Fatal("containerC has no role=db label, yet TCP 9000 is open to it")
		}
	})

	t.Run("a forged source address is dropped", func(t *testing.T) {
		must(t, n0, "exec", "containerA", "ip", "addr", "add", "192.168.250.250/32", "dev", "cali0")
		if out, err := n0.Docker("exec", "containerA", "ping", "-c", "2", "-W", "2", "-I", "192.168.250.250", ipC); err == nil {
			t.Fatalf("a ping from a forged source got an answer:\n%s", out)
		}
		mustPing(t, n0, "containerA", ipC)
	})

	t.Run("the policy table is rebuilt on restart and removed at uninstall", func(t *testing.T) {
		n1.StopTabby()
		mustExec(t, n1, "nft", "delete", "table", "inet", "tabby") // lost while tabby was down
		n1.StartTabby()
		if out := mustExec(t, n1, "nft", "list", "table", "inet", "tabby"); !strings.Contains(out, "chain in-cali") {
			t.Fatalf("after a restart node01's table lacks its endpoint chains:\n%s", out)
		}
		must(t, n1, "rm", "-f", "containerC", "containerD", "containerE")
		n1.StopTabby()
		if out := mustExec(t, n1, "nft", "list", "tables"); strings.Contains(out, "tabby") {
			t.Fatalf("uninstall left tabby's nftables table:\n%s", out)
		}
	})
}
