package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// Outgoing NAT: a container reaches an address outside every pool (the lab
// switch's 10.99.0.1, which has no route back to any pool) only through
// masquerading, and a pool with natOutgoing false does not.
// MTU: the host's 1500 less the pool's encapsulation, unless -o sets it.
// IPIP: refused with the missing module named where the kernel lacks it.
func TestOutgoingNATMTUAndIPIPCheck(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	applyYAML(t, l, h, "pools.yaml", "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: nonat}\nspec: {cidr: 10.20.0.0/16, natOutgoing: false}\n"+
		"---\napiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.30.0.0/16, vxlanMode: Always}\n")
	// A network without --subnet draws from every pool (Calico's way), and
	// the VXLAN pool gives this host a block for its tunnel address: pin
	// net1 to the default pool so its container's MTU and NAT are known.
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "192.168.0.0/16", "net1")
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "10.20.0.0/16", "nonat")
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "10.30.0.0/16", "vx")
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "10.30.0.0/16", "-o", "com.docker.network.driver.mtu=1400", "vx1400")
	for _, c := range [][2]string{{"natted", "net1"}, {"plain", "nonat"}, {"tunnelled", "vx"}, {"fixed", "vx1400"}} {
		must(t, h, "run", "--net", c[1], "--name", c[0], "-tid", "busybox")
	}

	if out, ok := pings(h, "natted", "10.99.0.1"); !ok {
		t.Fatalf("a container of a natOutgoing pool cannot reach 10.99.0.1:\n%s\n%s", out, mustExec(t, h, "iptables", "-t", "nat", "-S"))
	}
	if out, ok := pings(h, "plain", "10.99.0.1"); ok {
		t.Fatalf("a pool with natOutgoing false must not be masqueraded:\n%s", out)
	}
	// Pool to pool is routed (the NAT chain returns it untouched, checked
	// below), once a policy opens the networks to each other: they are
	// isolated by default.
	applyYAML(t, l, h, "open.yaml", "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: open}\nspec: {selector: all(), ingress: [{action: Allow}]}\n")
	eventually(t, 10*time.Second, "plain reaches natted once a policy allows it", func() (string, bool) {
		return pings(h, "plain", ipOf(t, h, "natted", "net1"))
	})
	nat := mustExec(t, h, "iptables", "-t", "nat", "-S", "TABBY-NAT-OUTGOING")
	if !strings.Contains(nat, "-s 192.168.0.0/16 -j MASQUERADE") || strings.Contains(nat, "-s 10.20.0.0/16 -j MASQUERADE") {
		t.Fatalf("NAT chain:\n%s", nat)
	}

	for c, want := range map[string]string{"natted": "mtu 1500", "tunnelled": "mtu 1450", "fixed": "mtu 1400"} {
		if out := must(t, h, "exec", c, "ip", "link", "show", "cali0"); !strings.Contains(out, want) {
			t.Fatalf("%s: cali0 should have %s:\n%s", c, want, out)
		}
	}

	if kernelHasIPIP(h) {
		t.Skip("this kernel has ipip: the refusal does not apply (TestIPIP covers IPIP routing)")
	}
	out, err := h.Tabby("apply", "-f", writeFile(t, l, "ipip.yaml",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: tunnel}\nspec: {cidr: 10.40.0.0/16, ipipMode: Always}\n"))
	if err == nil || !strings.Contains(out, "ipip module") || !strings.Contains(out, "spec.ipipMode") {
		t.Fatalf("an IPIP pool must be refused naming the missing ipip module: %v\n%s", err, out)
	}
	if pools := mustTabby(t, h, "get", "ippools"); strings.Contains(pools, "tunnel") {
		t.Fatalf("the refused pool was stored:\n%s", pools)
	}
	if out := mustExec(t, h, "ip", "-o", "link"); strings.Contains(out, "tabbyipipprobe") {
		t.Fatalf("the IPIP probe was left behind:\n%s", out)
	}
}

// kernelHasIPIP asks iproute2, independently of tabby, whether the host's
// kernel makes ipip tunnels.
func kernelHasIPIP(h *lab.Host) bool {
	// Addresses of its own: an ipip link without them collides with the
	// fallback tunl0 (EEXIST) where the module is loaded.
	_, err := h.Exec("ip", "link", "add", "oracle0", "type", "ipip", "local", "192.0.2.1", "remote", "192.0.2.2")
	h.Exec("ip", "link", "del", "oracle0")
	return err == nil
}
