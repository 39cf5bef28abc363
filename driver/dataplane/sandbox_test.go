package dataplane

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A container namespace as Docker leaves it after a --subnet network's
// join: the subnet via the endpoint's gateway in main. Setting it aside
// moves it to SandboxTable behind a rule, where it still routes; doing it
// again changes nothing.
func TestSetSubnetRouteAside(t *testing.T) {
	ns := testNS(t)
	inNS(t, ns, "ip", "link", "add", "cali0", "type", "veth", "peer", "name", "hostside")
	inNS(t, ns, "ip", "link", "set", "hostside", "up")
	inNS(t, ns, "ip", "link", "set", "cali0", "up")
	inNS(t, ns, "ip", "route", "add", "169.254.1.1/32", "dev", "cali0", "scope", "link")
	inNS(t, ns, "ip", "route", "add", "192.168.0.0/16", "via", "169.254.1.1", "dev", "cali0")
	inNS(t, ns, "ip", "route", "add", "10.10.0.0/16", "via", "169.254.1.1", "dev", "cali0")

	h, err := OpenSandbox(filepath.Join(t.TempDir(), "gone"), "/run/netns/"+ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i := 0; i < 2; i++ {
		if err := SetSubnetRouteAside(h, netip.MustParsePrefix("192.168.0.0/16"), netip.MustParseAddr("169.254.1.1")); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	main := inNS(t, ns, "ip", "route")
	if strings.Contains(main, "192.168.0.0/16") || !strings.Contains(main, "10.10.0.0/16") {
		t.Fatalf("main should keep only the other subnet's route:\n%s", main)
	}
	if aside := inNS(t, ns, "ip", "route", "show", "table", "77"); !strings.Contains(aside, "192.168.0.0/16 via 169.254.1.1 dev cali0") {
		t.Fatalf("table 77:\n%s", aside)
	}
	if rules := inNS(t, ns, "ip", "rule"); strings.Count(rules, "lookup 77") != 1 || !strings.Contains(rules, "32765:") {
		t.Fatalf("want one rule for table 77 before main:\n%s", rules)
	}
	if got := inNS(t, ns, "ip", "route", "get", "192.168.7.7"); !strings.Contains(got, "via 169.254.1.1 dev cali0") {
		t.Fatalf("192.168.7.7 should still route via the gateway: %s", got)
	}
}

// A sandbox key whose namespace mount is not visible here is a plain file:
// it is skipped, and with nothing else to try the error names it.
func TestOpenSandboxSkipsWhatIsNotANamespace(t *testing.T) {
	f := filepath.Join(t.TempDir(), "sandbox")
	os.WriteFile(f, nil, 0o644)
	if h, err := OpenSandbox(f); err == nil {
		h.Close()
		t.Fatal("a plain file opened as a namespace")
	} else if !strings.Contains(err.Error(), f) {
		t.Fatalf("error should name %s: %v", f, err)
	}
}

// Forwarding link by link: every link (not lo) forwards, and so does an
// endpoint's veth made afterwards, while the namespace's ip_forward stays
// as it was.
func TestForwardPerLink(t *testing.T) {
	ns := testNS(t)
	inNS(t, ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	before := inNS(t, ns, "cat", "/proc/sys/net/ipv4/ip_forward")
	d := newDP(t, ns)
	if err := d.ForwardPerLink(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"eth0", "eth1"} {
		if nc := inNS(t, ns, "ip", "netconf", "show", "dev", l); !strings.Contains(nc, "forwarding on") {
			t.Fatalf("%s: %s", l, nc)
		}
	}
	if err := d.SetupEndpoint(Endpoint{HostIf: HostIfName(epID), TempIf: TempIfName(epID), IPv4: netip.MustParseAddr("192.168.1.5"), MTU: 1500}); err != nil {
		t.Fatal(err)
	}
	if nc := inNS(t, ns, "ip", "netconf", "show", "dev", HostIfName(epID)); !strings.Contains(nc, "forwarding on") {
		t.Fatalf("endpoint veth: %s", nc)
	}
	if f := inNS(t, ns, "cat", "/proc/sys/net/ipv4/ip_forward"); f != before {
		t.Fatalf("ip_forward changed from %s to %s", before, f)
	}
}
