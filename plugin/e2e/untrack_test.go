package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// conntrackIn lists the connection tracking table of a container's
// namespace.
func conntrackIn(t *testing.T, h *lab.Host, ctr string) string {
	t.Helper()
	pid := must(t, h, "inspect", "-f", "{{.State.Pid}}", ctr)
	out, err := nsRun("/proc/"+strings.TrimSpace(pid)+"/ns/net", "cat", "/proc/net/nf_conntrack")
	if err != nil {
		t.Fatalf("conntrack table of %s: %v %s", ctr, err, out)
	}
	return out
}

// Docker's embedded-DNS nat rules switch on connection tracking in every
// container's namespace; tabby exempts all but the loopback (where the DNS
// flows are), so traffic to other containers is tracked once, on the
// host. Docker's DNS still answers, the host's policy still decides, a
// restarted container (a new namespace) is exempted again, and so is a
// running container that joins a tabby network.
func TestContainerTrafficUntrackedInItsNamespace(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n0, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipC := ipOf(t, n1, "containerC", "net1")
	for round, restart := range []bool{false, true} {
		if restart {
			must(t, n0, "restart", "-t", "0", "containerA")
		}
		eventually(t, 30*time.Second, "tabby's untrack table in containerA's namespace", func() (string, bool) {
			pid, _ := n0.Docker("inspect", "-f", "{{.State.Pid}}", "containerA")
			out, _ := nsRun("/proc/"+strings.TrimSpace(pid)+"/ns/net", "nft", "list", "table", "inet", "tabby")
			return out, strings.Contains(out, `iifname != "lo" notrack`) && strings.Contains(out, `oifname != "lo" notrack`)
		})
		// Docker's resolver, through its nat rules on the loopback.
		if out, err := n0.Docker("exec", "containerA", "nslookup", "containerB"); err != nil || !strings.Contains(out, ipOf(t, n0, "containerB", "net1")) {
			t.Fatalf("round %d: Docker's DNS from an untracked container: %v %s", round, err, out)
		}
		eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })
		ct := conntrackIn(t, n0, "containerA")
		if !strings.Contains(ct, "127.0.0.11") {
			t.Fatalf("round %d: no DNS flow tracked in containerA's namespace (is conntrack on there at all?):\n%s", round, ct)
		}
		if strings.Contains(ct, ipC) {
			t.Fatalf("round %d: traffic to containerC is tracked in containerA's namespace:\n%s", round, ct)
		}
	}
	// A running container joins a tabby network: untracked from then on;
	// before, on Docker's default bridge alone, tabby leaves it be.
	must(t, n0, "run", "--name", "containerD", "-tid", "busybox")
	pidD := strings.TrimSpace(must(t, n0, "inspect", "-f", "{{.State.Pid}}", "containerD"))
	if out, err := nsRun("/proc/"+pidD+"/ns/net", "nft", "list", "tables"); err != nil || strings.Contains(out, "tabby") {
		t.Fatalf("a container without a tabby endpoint got tabby's table: %v %s", err, out)
	}
	must(t, n0, "network", "connect", "net1", "containerD")
	eventually(t, 30*time.Second, "tabby's untrack table in containerD's namespace after network connect", func() (string, bool) {
		out, _ := nsRun("/proc/"+pidD+"/ns/net", "nft", "list", "table", "inet", "tabby")
		return out, strings.Contains(out, `iifname != "lo" notrack`)
	})
	// The host's policy still holds: a profile without ingress from net1's
	// selector drops containerA's pings once a policy denies them.
	deny := "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: deny-icmp}\nspec:\n  order: 1\n  selector: all()\n" +
		"  ingress:\n  - action: Deny\n    protocol: ICMP\n"
	if out, err := n0.Tabby("apply", "-f", writeFile(t, l, "deny.yaml", deny)); err != nil {
		t.Fatalf("apply: %v %s", err, out)
	}
	eventually(t, 30*time.Second, "the host's policy drops containerA's pings", func() (string, bool) {
		out, ok := pings(n0, "containerA", ipC)
		return out, !ok
	})
	t.Logf("REPORT\tdataplane\tcontainer traffic untracked in its own namespace\tDNS flows tracked, traffic to other containers not; policy enforced; again after a restart and on network connect\tpass")
}
