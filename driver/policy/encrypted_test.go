package policy

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// The attack: a machine on the underlay forges packets from a block of a
// host that sends only through WireGuard. Without the rule they are
// answered; with it they are dropped, and other traffic still flows.
func TestForgedTrafficFromEncryptingPeersIsDropped(t *testing.T) {
	id := needNftables(t)
	host, spoofer := "tpolwh-"+id, "tpolws-"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	for _, ns := range []string{host, spoofer} {
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	run("ip", "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", spoofer)
	run("ip", "-n", host, "addr", "add", "10.255.0.1/24", "dev", "up0")
	run("ip", "-n", spoofer, "addr", "add", "10.255.0.2/24", "dev", "up1")
	run("ip", "-n", spoofer, "addr", "add", "10.244.9.5/32", "dev", "lo")
	run("ip", "-n", host, "link", "set", "up0", "up")
	run("ip", "-n", spoofer, "link", "set", "up1", "up")
	run("ip", "-n", host, "route", "add", "10.244.9.0/26", "via", "10.255.0.2")
	ping := func(from string) bool {
		return exec.Command("ip", "netns", "exec", spoofer, "busybox", "ping", "-c", "1", "-W", "1", "-I", from, "10.255.0.1").Run() == nil
	}
	enf, err := NewEnforcer("ip", "netns", "exec", host, "nft")
	if err != nil {
		t.Fatal(err)
	}
	apply := func(in Input) {
		t.Helper()
		script, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enf.Apply(script); err != nil {
			t.Fatalf("%v\n%s", err, script)
		}
	}
	apply(Input{})
	if !ping("10.244.9.5") {
		t.Fatal("control: without the rule the block's address is answered")
	}
	apply(Input{Encrypted: Encrypted{Iface: "wireguard.tabby", From: []netip.Prefix{
		netip.MustParsePrefix("10.244.9.0/26"), netip.MustParsePrefix("fd00:9::/122")}}})
	if ping("10.244.9.5") {
		t.Fatal("a forged packet from an encrypting peer's block was let in")
	}
	if !ping("10.255.0.2") {
		t.Fatal("traffic from elsewhere must still flow")
	}
	out, _ := exec.Command("ip", "netns", "exec", host, "nft", "list", "chain", "inet", Table, "antispoof").CombinedOutput()
	if !strings.Contains(string(out), `iifname != "wireguard.tabby" iifname != "cali*" ip saddr 10.244.9.0/26 drop`) ||
		!strings.Contains(string(out), `ip6 saddr fd00:9::/122 drop`) {
		t.Fatalf("antispoof chain:\n%s", out)
	}
}
