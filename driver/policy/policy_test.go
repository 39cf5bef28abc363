package policy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

// profileOf is the profile the driver gives every network.
func profileOf(net string) datastore.Profile {
	return datastore.Profile{Name: net,
		Ingress: []datastore.Rule{{Action: "Allow", Source: datastore.RuleTarget{Selector: "tabby.network == '" + net + "'"}}},
		Egress:  []datastore.Rule{{Action: "Allow"}}}
}

func ep(iface, ip, net string) Endpoint {
	return Endpoint{Iface: iface, Addrs: []netip.Addr{netip.MustParseAddr(ip)},
		Labels: map[string]string{"tabby.network": net}, Profiles: []string{net}}
}

func TestCompileRulesAndSets(t *testing.T) {
	a, c := ep("caliaaaaaaaaaaa", "10.0.0.1", "net1"), ep("caliccccccccccc", "10.0.0.3", "net2")
	remote := ep("", "10.0.9.9", "net1")
	pol := datastore.NetworkPolicy{Name: "net2-to-net1", Selector: "tabby.network == 'net1'", Ingress: []datastore.Rule{{
		Action: "Allow", Protocol: "TCP", Source: datastore.RuleTarget{Selector: "tabby.network == 'net2'"},
		Destination: datastore.RuleTarget{Ports: []datastore.Port{"8080"}}}}}
	in := Input{Local: []Endpoint{a, c}, All: []Endpoint{a, c, remote},
		Profiles: map[string]datastore.Profile{"net1": profileOf("net1"), "net2": profileOf("net2")},
		Policies: []datastore.NetworkPolicy{pol}}
	script, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"elements = { 10.0.0.1, 10.0.9.9 }", // net1 members on every host
		"ip saddr @" + SetName("tabby.network == 'net2'", false) + " meta l4proto tcp th dport { 8080 } accept",
		`iifname "caliaaaaaaaaaaa" ip saddr != { 10.0.0.1 } drop`,
		`iifname vmap { "caliaaaaaaaaaaa" : goto eg-caliaaaaaaaaaaa, "caliccccccccccc" : goto eg-caliccccccccccc }`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	// The policy selects net1 only: net2's endpoint gets no port rule.
	c2 := script[strings.Index(script, "chain in-caliccccccccccc"):]
	if strings.Contains(c2[:strings.Index(c2, "}")], "8080") {
		t.Errorf("the net1 policy leaked into net2's ingress chain:\n%s", c2)
	}
	bad := in
	bad.Policies = []datastore.NetworkPolicy{{Name: "p", Selector: "all()", Ingress: []datastore.Rule{{Action: "Allow", Destination: datastore.RuleTarget{Ports: []datastore.Port{"80"}}}}}}
	if _, err := Compile(bad); err == nil || !strings.Contains(err.Error(), "ports need protocol") {
		t.Errorf("ports without a protocol: %v", err)
	}
	if err := Validate(datastore.NetworkPolicy{Name: "x", Selector: "role =="}); err == nil || !strings.Contains(err.Error(), "spec.selector") {
		t.Errorf("bad selector: %v", err)
	}
}

// The rule set in a real kernel: a host namespace with three "containers"
// wired like tabby's endpoints. Same network talks, different networks do
// not, a policy opens exactly one port, and a forged source is dropped.
// needNftables skips a test that needs root and the nft command, and
// returns a random id for the namespaces it makes.
func needNftables(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command (nftables package): " + err.Error())
	}
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func TestEnforcementInKernel(t *testing.T) {
	id := needNftables(t)
	host := "tpolh-" + id
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Proxy ARP answers for 169.254.1.1 only when the host routes it.
	run("ip", "-n", host, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	run("ip", "-n", host, "addr", "add", "10.255.0.1/24", "dev", "up0")
	run("ip", "-n", host, "link", "set", "up0", "up")
	run("ip", "-n", host, "link", "set", "up1", "up")
	run("ip", "-n", host, "route", "add", "default", "via", "10.255.0.2")
	ctrs := map[string]Endpoint{
		"a": ep("caliaaaaaaaaaaa", "10.0.0.1", "net1"),
		"b": ep("calibbbbbbbbbbb", "10.0.0.2", "net1"),
		"c": ep("caliccccccccccc", "10.0.0.3", "net2"),
	}
	for n, e := range ctrs {
		ns := "tpol" + n + "-" + id
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", host, "link", "add", e.Iface, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.conf."+e.Iface+".proxy_arp=1", "net.ipv4.neigh."+e.Iface+".proxy_delay=0")
		run("ip", "-n", host, "link", "set", e.Iface, "up")
		run("ip", "-n", host, "route", "add", e.Addrs[0].String(), "dev", e.Iface)
		run("ip", "-n", ns, "link", "set", "eth0", "up")
		run("ip", "-n", ns, "link", "set", "lo", "up")
		run("ip", "-n", ns, "addr", "add", e.Addrs[0].String()+"/32", "dev", "eth0")
		run("ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		run("ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1")
	}
	enf, err := NewEnforcer("ip", "netns", "exec", host, "nft")
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Profiles: map[string]datastore.Profile{"net1": profileOf("net1"), "net2": profileOf("net2")}}
	for _, e := range ctrs {
		in.Local, in.All = append(in.Local, e), append(in.All, e)
	}
	apply := func() {
		t.Helper()
		s, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enf.Apply(s); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
	}
	apply()
	ping := func(from, to string, extra ...string) bool {
		args := append([]string{"netns", "exec", "tpol" + from + "-" + id, "busybox", "ping", "-c", "1", "-W", "1"}, extra...)
		return exec.Command("ip", append(args, to)...).Run() == nil
	}
	tcp := func(from, to string, port int) bool {
		srv := exec.Command("ip", "netns", "exec", "tpol"+to+"-"+id, "busybox", "nc", "-l", "-p", fmt.Sprint(port))
		srv.Start()
		defer func() { srv.Process.Kill(); srv.Wait() }()
		for i := 0; i < 20; i++ { // until the listener is up; a refused SYN is not a drop
			cmd := exec.Command("ip", "netns", "exec", "tpol"+from+"-"+id, "busybox", "nc", "-w", "1", ctrs[to].Addrs[0].String(), fmt.Sprint(port))
			cmd.Stdin = strings.NewReader("x")
			out, err := cmd.CombinedOutput()
			if err == nil {
				return true
			}
			if !strings.Contains(string(out), "refused") {
				return false // timed out: dropped
			}
		}
		return false
	}
	if !ping("a", "10.0.0.2") {
		t.Fatal("a cannot reach b on the same network")
	}
	if ping("a", "10.0.0.3") || ping("c", "10.0.0.1") {
		t.Fatal("net1 and net2 reach each other without a policy")
	}
	in.Policies = []datastore.NetworkPolicy{{Name: "net2-to-net1", Selector: "tabby.network == 'net1'", Ingress: []datastore.Rule{{
		Action: "Allow", Protocol: "TCP", Source: datastore.RuleTarget{Selector: "tabby.network == 'net2'"},
		Destination: datastore.RuleTarget{Ports: []datastore.Port{"8080"}}}}}}
	apply()
	if !tcp("c", "a", 8080) {
		t.Fatal("the policy should open net2 -> net1 on TCP 8080")
	}
	if tcp("c", "a", 8081) || ping("c", "10.0.0.1") {
		t.Fatal("the policy opened more than TCP 8080")
	}
	in.Policies = nil
	apply()
	if tcp("c", "a", 8080) {
		t.Fatal("deleting the policy should close TCP 8080 again")
	}
	// Anti-spoofing: a sends from an address that is not its own.
	run("ip", "-n", "tpola-"+id, "addr", "add", "10.0.0.99/32", "dev", "eth0")
	if ping("a", "10.0.0.2", "-I", "10.0.0.99") {
		t.Fatal("a forged source address got through")
	}
	if !ping("a", "10.0.0.2") {
		t.Fatal("a's own address must still work")
	}
	for i := 0; i < 2; i++ {
		if err := enf.Remove(); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if out := run("ip", "netns", "exec", host, "nft", "list", "tables"); strings.Contains(out, "tabby") {
		t.Fatalf("table left after Remove: %s", out)
	}
}

// A selector longer than nft allows in a comment (128 bytes), with a label
// value that tries to end the set and add a table of its own: the ruleset
// carries no user text, so it applies, and nothing else appears.
func TestSelectorTextStaysOutOfTheRuleset(t *testing.T) {
	host := "tpols-" + needNftables(t)
	if out, err := exec.Command("ip", "netns", "add", host).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	hostile := "x\"\n}\n}\ntable inet evil {\nchain c {"
	sel := "tabby.network == 'net1' && app in {'" + strings.Repeat("a", 130) + "', '" + hostile + "'}"
	pol := datastore.NetworkPolicy{Name: "long", Order: 10, Selector: sel,
		Ingress: []datastore.Rule{{Action: "Allow", Source: datastore.RuleTarget{Selector: sel}}}}
	if err := Validate(pol); err != nil {
		t.Fatalf("the selector should be valid: %v", err)
	}
	e := ep("caliaaaaaaaaaaa", "10.0.0.1", "net1")
	e.Labels["app"] = strings.Repeat("a", 130) // selected, so the policy and its sets are written
	in := Input{Local: []Endpoint{e}, All: []Endpoint{e}, Profiles: map[string]datastore.Profile{"net1": profileOf("net1")},
		Policies: []datastore.NetworkPolicy{pol}}
	s, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, "10.0.0.1") {
		t.Fatalf("the policy's source set should hold the selected endpoint:\n%s", s)
	}
	if strings.Contains(s, "evil") || strings.Contains(s, strings.Repeat("a", 130)) {
		t.Fatalf("selector text in the ruleset:\n%s", s)
	}
	enf, err := NewEnforcer("ip", "netns", "exec", host, "nft")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enf.Apply(s); err != nil {
		t.Fatalf("apply: %v\n%s", err, s)
	}
	out, _ := exec.Command("ip", "netns", "exec", host, "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), "evil") || !strings.Contains(string(out), "tabby") {
		t.Fatalf("tables after apply:\n%s", out)
	}
	t.Logf("REPORT\tpolicy input\ta %d-byte selector whose label value tries to add an nft table\tapplied; no user text in the ruleset\tpass", len(sel))
}

// Repair puts the last rule set back once its table is gone, and does
// nothing while it is there.
func TestRepairReinstallsAFlushedTable(t *testing.T) {
	host, enf := enforcerIn(t, "tpolr-")
	if did, err := enf.Repair(); did || err != nil {
		t.Fatalf("repair before any apply: %v %v", did, err)
	}
	e := ep("caliaaaaaaaaaaa", "10.0.0.1", "net1")
	s, err := Compile(Input{Local: []Endpoint{e}, All: []Endpoint{e}, Profiles: map[string]datastore.Profile{"net1": profileOf("net1")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enf.Apply(s); err != nil {
		t.Fatal(err)
	}
	if did, err := enf.Repair(); did || err != nil {
		t.Fatalf("repair with the table there: %v %v", did, err)
	}
	exec.Command("ip", "netns", "exec", host, "nft", "flush", "ruleset").Run()
	if did, err := enf.Repair(); !did || err != nil {
		t.Fatalf("repair after a flush: %v %v", did, err)
	}
	if out, _ := exec.Command("ip", "netns", "exec", host, "nft", "list", "tables").CombinedOutput(); !strings.Contains(string(out), "table inet tabby") {
		t.Fatalf("tables after repair:\n%s", out)
	}
}

// Published ports become DNAT rules of the family they name; a family the
// container lacks, or a host address of the other family, gets none.
func TestPublishRules(t *testing.T) {
	e := Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}}
	e.Ports = []datastore.PortMapping{
		{Proto: "tcp", HostPort: 8080, Port: 80},
		{Proto: "udp", HostIP: "0.0.0.0", HostPort: 53, Port: 5353},
		{Proto: "tcp", HostIP: "::", HostPort: 8443, Port: 443},
		{Proto: "tcp", HostIP: "192.0.2.7", HostPort: 81, Port: 80},
		{Proto: "sctp", HostPort: 9, Port: 9},
	}
	want := []string{
		"meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.0.0.5:80",
		"meta nfproto ipv6 fib daddr type local tcp dport 8080 dnat ip6 to [fd00::5]:80",
		"meta nfproto ipv4 fib daddr type local udp dport 53 dnat ip to 10.0.0.5:5353",
		"meta nfproto ipv6 fib daddr type local tcp dport 8443 dnat ip6 to [fd00::5]:443",
		"ip daddr 192.0.2.7 tcp dport 81 dnat ip to 10.0.0.5:80",
	}
	if got := publishRules(e); !slices.Equal(got, want) {
		t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e.Addrs = e.Addrs[:1]
	if got := publishRules(e); len(got) != 3 {
		t.Fatalf("an IPv4-only container: %q, want the three IPv4 rules", got)
	}
}

// The NAT of published ports, local, everywhere and internal endpoints
// together, loads into a real kernel's nftables.
func TestPublishRulesetLoads(t *testing.T) {
	id := needNftables(t)
	ns := "tpolp-" + id
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	web := ep("caliwwwwwwwwwww", "10.0.0.1", "net1")
	web.Ports = []datastore.PortMapping{{Proto: "tcp", HostPort: 8080, Port: 80}, {Proto: "udp", HostIP: "0.0.0.0", HostPort: 53, Port: 53}}
	web.Everywhere = true
	inner := ep("caliiiiiiiiiiii", "10.0.0.2", "net2")
	inner.Internal = true
	far := Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.1.7"), netip.MustParseAddr("fd00::7")},
		Ports: []datastore.PortMapping{{Proto: "tcp", HostPort: 9090, Port: 90}}}
	in := Input{Profiles: map[string]datastore.Profile{"net1": profileOf("net1"), "net2": profileOf("net2")},
		Local: []Endpoint{web, inner}, All: []Endpoint{web, inner, far}, Remote: []Endpoint{far},
		Nodes: []netip.Addr{netip.MustParseAddr("10.99.0.10"), netip.MustParseAddr("fd00:99::10")},
		Host:  HostAccess{ControlTCP: []uint16{179}, OpenPorts: []uint16{53}}}
	script, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s\n%s", err, out, script)
	}
	for _, want := range []string{"chain publish-out", "chain publish-snat", "dnat ip to 10.0.1.7:90", "dnat ip6 to [fd00::7]:90",
		"ip saddr @nodes_4 tcp dport 80 accept", "ip daddr != @sel"} {
		if !strings.Contains(script, want) {
			t.Errorf("the script lacks %q", want)
		}
	}
	// Through the index, installed whole (a first apply): the sets the
	// index does not own, the hosts' addresses, keep the script's elements.
	in.Members = membersOf(in.All, in.Profiles)
	indexed, err := Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	_, enf := enforcerIn(t, "tpolq-")
	if _, err := enf.ApplyIndexed(indexed, in.Members, in.Members.Delta()); err != nil {
		t.Fatal(err)
	}
	if whole := render(enf.cur); !strings.Contains(whole, "10.99.0.10") || !strings.Contains(whole, "10.0.0.1") {
		t.Fatalf("a whole indexed apply lost the hosts' or the selectors' elements:\n%s", whole)
	}
}

// After the first rule set, Apply sends differences only (set elements,
// chains added, refilled or deleted one by one, sets added and deleted),
// and ApplyElements sends a Members delta alone: at every step the
// kernel's table is what a whole replacement in a fresh namespace makes.
// A table lost meanwhile is replaced whole.
func TestIncrementalApplyMatchesAFullOne(t *testing.T) {
	host, enf := enforcerIn(t, "tpoli-")
	profiles := map[string]datastore.Profile{"net1": profileOf("net1"), "net2": profileOf("net2")}
	a, b := ep("caliaaaaaaaaaaa", "10.0.0.1", "net1"), ep("calibbbbbbbbbbb", "10.0.0.2", "net2")
	web := datastore.NetworkPolicy{Name: "web", Selector: "tabby.network == 'net2'", Ingress: []datastore.Rule{{
		Action: "Allow", Protocol: "TCP", Source: datastore.RuleTarget{Selector: "role == 'lb'"}}}}
	lb := ep("", "10.0.1.9", "net1")
	lb.Labels = map[string]string{"tabby.network": "net1", "role": "lb"}
	members := NewMembers()
	members.SetProfiles(profiles)
	remote := map[string]Endpoint{"r1": ep("", "10.0.1.2", "net1"), "r2": ep("", "10.0.1.3", "net1")}
	step := func(what string, local []Endpoint, pols []datastore.NetworkPolicy) {
		t.Helper()
		for k, e := range remote {
			members.Put(k, e)
		}
		for _, e := range local {
			members.Put(e.Iface, e)
		}
		in := Input{Local: local, Profiles: profiles, Policies: pols, Members: members}
		s, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, "elements") {
			t.Fatalf("%s: a script compiled with an index carries set elements:\n%s", what, s)
		}
		if _, err := enf.ApplyIndexed(s, members, members.Delta()); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		sameAsFull(t, what, host, Whole(s, members))
	}
	step("first", []Endpoint{a}, nil)
	remote["r3"] = ep("", "10.0.1.4", "net1")
	delete(remote, "r1")
	members.Delete("r1")
	step("an endpoint elsewhere comes and another goes", []Endpoint{a}, nil)
	step("a new local endpoint", []Endpoint{a, b}, nil)
	remote["lb"] = lb
	step("a policy with a new selector", []Endpoint{a, b}, []datastore.NetworkPolicy{web})
	members.Delete("caliaaaaaaaaaaa")
	step("a local endpoint and the policy go", []Endpoint{b}, nil)
	if full, partial := enf.Applies(); full != 1 || partial != 4 {
		t.Fatalf("applies: %d whole, %d differences; want 1 and 4", full, partial)
	}
	// Elements alone, from the index.
	members.Put("r4", ep("", "10.0.1.5", "net1"))
	members.Delete("r2")
	delete(remote, "r2")
	remote["r4"] = ep("", "10.0.1.5", "net1")
	delta := members.Delta()
	if _, err := enf.ApplyElements(delta); err != nil {
		t.Fatal(err)
	}
	s, _ := Compile(Input{Local: []Endpoint{b}, Profiles: profiles, Members: members})
	sameAsFull(t, "element update from the index", host, Whole(s, members))
	if _, err := enf.ApplyElements(delta); err != nil {
		t.Fatalf("the same delta again (elements already there or gone) must succeed: %v", err)
	}
	// The table goes; the element update that finds it gone is spent, and
	// the next apply must still install its member.
	exec.Command("ip", "netns", "exec", host, "nft", "flush", "ruleset").Run()
	members.Put("r5", ep("", "10.0.1.6", "net2")) // a member of a set b needs
	if _, err := enf.ApplyElements(members.Delta()); err == nil {
		t.Fatal("an element update into a flushed table succeeded")
	}
	remote["r5"] = ep("", "10.0.1.6", "net2")
	step("after the table was lost", []Endpoint{b}, nil)
	if !strings.Contains(Whole(s, members), "10.0.1.6") {
		t.Fatal("the index lost r5")
	}
	if full, _ := enf.Applies(); full != 2 {
		t.Fatalf("a lost table must be replaced whole: %d whole applies", full)
	}
	t.Logf("REPORT\tpolicy\tchanges after the first rule set\tsent as differences; table equal to a whole replacement\tpass")
}

// sameAsFull checks host's table against script applied whole in a fresh
// namespace (sets' elements and blocks compared unordered).
func sameAsFull(t *testing.T, what, host, script string) {
	t.Helper()
	fresh, enf := enforcerIn(t, "tpolf-")
	if _, err := enf.Apply(script); err != nil {
		t.Fatalf("%s: whole apply: %v", what, err)
	}
	list := func(ns string) string {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", Table).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v %s", what, err, out)
		}
		return normalTable(string(out))
	}
	if got, want := list(host), list(fresh); got != want {
		t.Fatalf("%s: the incremental table differs from a whole apply:\n%s\nwant\n%s", what, got, want)
	}
	exec.Command("ip", "netns", "del", fresh).Run()
}

// normalTable sorts what nft may list in any order: set elements, blocks.
func normalTable(listing string) string {
	flat := strings.Join(strings.Fields(listing), " ")
	flat = regexp.MustCompile(`elements = \{[^}]*\}`).ReplaceAllStringFunc(flat, func(m string) string {
		items := strings.Split(strings.TrimSuffix(strings.TrimPrefix(m, "elements = { "), " }"), ", ")
		slices.Sort(items)
		return "elements = { " + strings.Join(items, ", ") + " }"
	})
	blocks := regexp.MustCompile(`(set|chain) \S+ \{`).Split(flat, -1)
	names := regexp.MustCompile(`(set|chain) \S+ \{`).FindAllString(flat, -1)
	var out []string
	for i, n := range names {
		out = append(out, n+blocks[i+1])
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// enforcerIn returns a fresh namespace (removed when the test ends) and an
// enforcer that programs it.
func enforcerIn(t testing.TB, prefix string) (string, *Enforcer) {
	t.Helper()
	host := prefix + needNftables(t)
	if out, err := exec.Command("ip", "netns", "add", host).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	enf, err := NewEnforcer("ip", "netns", "exec", host, "nft")
	if err != nil {
		t.Fatal(err)
	}
	return host, enf
}
