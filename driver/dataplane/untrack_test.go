package dataplane

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// A container's namespace untracked: what leaves or enters it over its
// interface is not tracked there, what stays on its loopback (Docker's DNS
// nat) is; applying again keeps one copy.
func TestUntrackSandbox(t *testing.T) {
	a, b := testNS(t), testNS(t)
	inNS(t, a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	inNS(t, a, "ip", "addr", "add", "10.9.0.1/24", "dev", "eth0")
	inNS(t, b, "ip", "addr", "add", "10.9.0.2/24", "dev", "eth0")
	for _, ns := range []string{a, b} {
		inNS(t, ns, "ip", "link", "set", "eth0", "up")
		inNS(t, ns, "ip", "link", "set", "lo", "up")
	}
	ns, err := netns.GetFromName(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if ok, err := SandboxUntracked(ns); err != nil || ok {
		t.Fatalf("a fresh namespace reads as untracked: %v %v", ok, err)
	}
	for i := 0; i < 2; i++ {
		if err := UntrackSandbox(ns); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := SandboxUntracked(ns); err != nil || !ok {
		t.Fatalf("untracked namespace not seen: %v %v", ok, err)
	}
	if n := strings.Count(inNS(t, a, "nft", "list", "ruleset"), "notrack"); n != 2 {
		t.Fatalf("%d notrack rules after two applies, want 2 (one per hook)", n)
	}
	probe := "table inet probe {\n chain out {\n type filter hook output priority 0; policy accept;\n" +
		" oifname \"eth0\" ct state untracked counter\n oifname \"lo\" ct state new counter\n }\n}\n"
	if out, err := nsCmd(a, probe, "nft", "-f", "-"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	inNS(t, a, "busybox", "ping", "-c", "2", "-W", "2", "10.9.0.2")
	inNS(t, a, "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1")
	counters := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(inNS(t, a, "nft", "list", "table", "inet", "probe"), -1)
	if len(counters) != 2 || counters[0][1] == "0" || counters[1][1] == "0" {
		t.Fatalf("untracked over eth0 / tracked on lo: counters %v, want both above 0", counters)
	}
}

// nsCmd runs a command in ns with stdin.
func nsCmd(ns, stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
