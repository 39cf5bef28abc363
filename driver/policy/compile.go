package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// Table is the nftables table tabby owns (family inet: IPv4 and IPv6).
const Table = "tabby"

// Endpoint is one workload endpoint as policy sees it.
type Endpoint struct {
	Iface    string // host-side interface; "" for endpoints of other hosts
	Addrs    []netip.Addr
	Labels   map[string]string
	Profiles []string
	// Sandbox lists the addresses of the container's other interfaces: a
	// container on two networks answers on one interface what came in on
	// the other (it has one default route), so those sources are its own.
	Sandbox []netip.Addr
	// Ports are the endpoint's published ports (local endpoints only).
	Ports []datastore.PortMapping
	// Everywhere: its published ports answer on every tabby host, which
	// forward to it from their own addresses (Input.Nodes).
	Everywhere bool
	// Internal: the endpoint's network is --internal: it sends nothing
	// beyond the cluster's endpoints, and nothing to its host but the
	// host's open ports (the resolver's).
	Internal bool
}

// Input is everything the rule set derives from.
type Input struct {
	Local    []Endpoint // this host's joined endpoints
	All      []Endpoint // every endpoint of the cluster, for selector sets
	Profiles map[string]datastore.Profile
	Policies []datastore.NetworkPolicy
	// Host is what containers may reach on their own host.
	Host HostAccess
	// Remote are other hosts' endpoints whose ports are published on every
	// host (with their Ports); Nodes are the tabby hosts' addresses.
	Remote []Endpoint
	Nodes  []netip.Addr
	// Encrypted are the blocks of hosts that send to this one only through
	// Iface (WireGuard): a packet from them arriving any other way is a
	// forgery on the underlay and is dropped.
	Encrypted Encrypted
	// Members, when set, gives the selector sets' members and All is not
	// read: the daemon keeps it current one endpoint change at a time. The
	// script then declares the sets without their elements: apply it with
	// Enforcer.ApplyIndexed.
	Members *Members
}

// Encrypted names the encrypting peers' blocks and their interface.
type Encrypted struct {
	Iface string
	From  []netip.Prefix
}

// rules drops what claims to come from the encrypting peers' blocks but did
// not arrive through their tunnel.
func (e Encrypted) rules() []string {
	var v4, v6 []string
	for _, p := range e.From {
		if p.Addr().Is4() {
			v4 = append(v4, p.Masked().String())
		} else {
			v6 = append(v6, p.Masked().String())
		}
	}
	var out []string
	for _, f := range []struct {
		match string
		cidrs []string
	}{{"ip", v4}, {"ip6", v6}} {
		if len(f.cidrs) > 0 && e.Iface != "" {
			// This host's own containers (a borrowed address may lie in a
			// peer's block) are checked by their own antispoof rules.
			out = append(out, fmt.Sprintf("iifname != %q iifname != \"cali*\" %s saddr { %s } drop", e.Iface, f.match, strings.Join(f.cidrs, ", ")))
		}
	}
	return out
}

// HostAccess is what a host's containers may send to the host itself.
type HostAccess struct {
	// ControlTCP are the TCP ports of tabby's own listeners (BGP, metrics,
	// embedded etcd): always closed to containers.
	ControlTCP []uint16
	// DropOthers closes every other port but OpenPorts too (the default,
	// false, is Docker's bridge: the rest of the host is reachable).
	DropOthers bool
	// OpenPorts stay reachable when DropOthers (the resolver's, on TCP
	// and UDP).
	OpenPorts []uint16
}

// compiler accumulates the named sets that selectors need.
type compiler struct {
	in      Input
	members *Members
	sets    map[string]bool // selectors with a set
	order   []string
}

// Compile returns the nftables script that replaces tabby's table with the
// rules for in: anti-spoofing per local endpoint, then for new forwarded
// connections the sending endpoint's egress rules and the receiving one's
// ingress rules, each made of the policies that select it (by order, first
// match decides) and then its profiles; no match drops.
func Compile(in Input) (string, error) {
	c := &compiler{in: in, members: in.Members, sets: map[string]bool{}}
	if c.members == nil {
		c.members = membersOf(in.All, in.Profiles)
	}
	pols := append([]datastore.NetworkPolicy(nil), in.Policies...)
	sort.Slice(pols, func(i, j int) bool {
		if pols[i].Order != pols[j].Order {
			return pols[i].Order < pols[j].Order
		}
		return pols[i].Name < pols[j].Name
	})
	local := append([]Endpoint(nil), in.Local...)
	sort.Slice(local, func(i, j int) bool { return local[i].Iface < local[j].Iface })
	var chains strings.Builder
	var spoof, from, to, dnat, internal []string
	for _, e := range local {
		dnat = append(dnat, publishRules(e)...)
		if e.Internal {
			internal = append(internal, strconv.Quote(e.Iface))
		}
		labels := c.labelsOf(e)
		for _, dir := range []string{"egress", "ingress"} {
			lines, err := c.endpointRules(e, labels, pols, dir)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&chains, "\tchain %s {\n", chainName(dir, e.Iface))
			for _, l := range lines {
				fmt.Fprintf(&chains, "\t\t%s\n", l)
			}
			chains.WriteString("\t}\n")
		}
		from = append(from, fmt.Sprintf("%q : goto %s", e.Iface, chainName("egress", e.Iface)))
		to = append(to, fmt.Sprintf("%q : goto %s", e.Iface, chainName("ingress", e.Iface)))
		spoof = append(spoof, antiSpoof(e)...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\ntable inet %s {\n", Table, Table, Table)
	// The index follows what the rules use, and for a while what they used.
	c.writeSets(&b, c.members.Retain(c.order))
	b.WriteString("\tchain antispoof {\n\t\ttype filter hook prerouting priority raw; policy accept;\n")
	for _, l := range append(spoof, in.Encrypted.rules()...) {
		fmt.Fprintf(&b, "\t\t%s\n", l)
	}
	b.WriteString("\t}\n")
	writeHostAccess(&b, c.in.Host, internal)
	writePublish(&b, dnat, in.Remote, in.Nodes)
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n" +
		"\t\tct state established,related accept\n\t\tct state invalid drop\n" +
		"\t\tiifname \"cali*\" jump from-wl\n\t\toifname \"cali*\" jump to-wl\n\t}\n")
	// Interfaces without rules yet (an endpoint being created) get nothing.
	for _, d := range []struct {
		name, match string
		vm          []string
	}{{"from-wl", "iifname", from}, {"to-wl", "oifname", to}} {
		fmt.Fprintf(&b, "\tchain %s {\n", d.name)
		if len(d.vm) > 0 {
			fmt.Fprintf(&b, "\t\t%s vmap { %s }\n", d.match, strings.Join(d.vm, ", "))
		}
		b.WriteString("\t\tdrop\n\t}\n")
	}
	b.WriteString(chains.String())
	b.WriteString("}\n")
	return b.String(), nil
}

// writeHostAccess writes the input chain: what containers may send to the
// host itself.
func writeHostAccess(b *strings.Builder, h HostAccess, internal []string) {
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	if len(h.ControlTCP) > 0 {
		fmt.Fprintf(b, "\t\tiifname \"cali*\" tcp dport { %s } drop\n", hostPortList(h.ControlTCP))
	}
	closed := func(match string) {
		fmt.Fprintf(b, "\t\tiifname %s ct state established,related accept\n", match)
		if len(h.OpenPorts) > 0 {
			fmt.Fprintf(b, "\t\tiifname %s meta l4proto { tcp, udp } th dport { %s } accept\n", match, hostPortList(h.OpenPorts))
		}
		fmt.Fprintf(b, "\t\tiifname %s drop\n", match)
	}
	if h.DropOthers {
		closed(`"cali*"`)
	} else if len(internal) > 0 {
		closed("{ " + strings.Join(internal, ", ") + " }")
	}
	b.WriteString("\t}\n")
}

func hostPortList(ports []uint16) string {
	ps := slices.Clone(ports)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = strconv.Itoa(int(p))
	}
	return strings.Join(out, ", ")
}

func chainName(dir, iface string) string {
	if dir == "egress" {
		return "eg-" + iface
	}
	return "in-" + iface
}

// labelsOf is an endpoint's labels over those of its profiles.
func (c *compiler) labelsOf(e Endpoint) map[string]string {
	out := map[string]string{}
	for _, p := range e.Profiles {
		for k, v := range c.in.Profiles[p].Labels {
			out[k] = v
		}
	}
	for k, v := range e.Labels {
		out[k] = v
	}
	return out
}

// endpointRules lists one direction's rules of a local endpoint.
func (c *compiler) endpointRules(e Endpoint, labels map[string]string, pols []datastore.NetworkPolicy, dir string) ([]string, error) {
	allow := "accept"
	if dir == "egress" {
		allow = "return" // the receiver's ingress rules still apply
	}
	var out []string
	if dir == "egress" && e.Internal {
		// An --internal network reaches the cluster's endpoints only.
		c.setFor("all()")
		out = append(out, fmt.Sprintf("ip daddr != @%s drop", SetName("all()", false)), fmt.Sprintf("ip6 daddr != @%s drop", SetName("all()", true)))
	}
	add := func(rules []datastore.Rule, owner string) error {
		for i, r := range rules {
			lines, err := c.rule(r, allow)
			if err != nil {
				return fmt.Errorf("%s %s rule %d: %w", owner, dir, i+1, err)
			}
			out = append(out, lines...)
		}
		return nil
	}
	for _, p := range pols {
		sel, err := ParseSelector(p.Selector)
		if err != nil {
			return nil, fmt.Errorf("NetworkPolicy %s: spec.selector: %w", p.Name, err)
		}
		if !sel.Matches(labels) {
			continue
		}
		rules := p.Ingress
		if dir == "egress" {
			rules = p.Egress
		}
		if err := add(rules, "NetworkPolicy "+p.Name); err != nil {
			return nil, err
		}
	}
	if dir == "ingress" && len(e.Ports) > 0 {
		// What reaches a published port is the container's to answer, as
		// on Docker's bridge, unless a policy above denied it; published
		// everywhere, it comes from the other hosts too.
		out = append(out, "ct status dnat accept")
		if e.Everywhere && len(c.in.Nodes) > 0 {
			for _, p := range e.Ports {
				out = append(out, fmt.Sprintf("ip saddr @nodes_4 %s dport %d accept", p.Proto, p.Port),
					fmt.Sprintf("ip6 saddr @nodes_6 %s dport %d accept", p.Proto, p.Port))
			}
		}
	}
	for _, name := range e.Profiles {
		prof, ok := c.in.Profiles[name]
		if !ok {
			continue
		}
		rules := prof.Ingress
		if dir == "egress" {
			rules = prof.Egress
		}
		if err := add(rules, "Profile "+name); err != nil {
			return nil, err
		}
	}
	return append(out, "drop"), nil
}

// antiSpoof drops what an endpoint sends from any address but its own
// (IPv6 link-local sources stay allowed: neighbour discovery uses them).
func antiSpoof(e Endpoint) []string {
	var v4, v6 []string
	for _, a := range append(append([]netip.Addr{}, e.Addrs...), e.Sandbox...) {
		if a.Is4() {
			v4 = append(v4, a.String())
		} else {
			v6 = append(v6, a.String())
		}
	}
	v6 = append(v6, "fe80::/10")
	out := []string{fmt.Sprintf("iifname %q ip6 saddr != { %s } drop", e.Iface, strings.Join(v6, ", "))}
	if len(v4) == 0 {
		return append(out, fmt.Sprintf("iifname %q meta nfproto ipv4 drop", e.Iface))
	}
	return append(out, fmt.Sprintf("iifname %q ip saddr != { %s } drop", e.Iface, strings.Join(v4, ", ")))
}

// rule turns one rule into nftables rules, one per address family its
// address matches allow (none when they contradict each other).
func (c *compiler) rule(r datastore.Rule, allow string) ([]string, error) {
	verdict := allow
	switch strings.ToLower(r.Action) {
	case "allow":
	case "deny":
		verdict = "drop"
	default:
		return nil, fmt.Errorf("action %q must be Allow or Deny", r.Action)
	}
	proto, err := protoMatch(r.Protocol)
	if err != nil {
		return nil, err
	}
	var l4 []string
	for _, side := range []struct {
		name string
		t    datastore.RuleTarget
	}{{"sport", r.Source}, {"dport", r.Destination}} {
		if len(side.t.Ports) == 0 {
			continue
		}
		if p := strings.ToLower(r.Protocol); p != "tcp" && p != "udp" {
			return nil, fmt.Errorf("ports need protocol TCP or UDP, not %q", r.Protocol)
		}
		ports, err := portList(side.t.Ports)
		if err != nil {
			return nil, err
		}
		l4 = append(l4, fmt.Sprintf("th %s { %s }", side.name, ports))
	}
	src, err := c.addrMatch(r.Source, "saddr")
	if err != nil {
		return nil, err
	}
	dst, err := c.addrMatch(r.Destination, "daddr")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, fam := range []int{4, 6} {
		s, sok := src[fam]
		d, dok := dst[fam]
		if !sok || !dok {
			continue
		}
		parts := append(append([]string{}, s...), d...)
		if len(parts) == 0 && fam == 6 {
			continue // no address match: the family-free rule below covers both
		}
		parts = append(append(parts, proto...), l4...)
		out = append(out, strings.Join(append(parts, verdict), " "))
	}
	return out, nil
}

// addrMatch returns per family the matches of one side of a rule; a family
// is missing when the side cannot match it (nets of the other family only).
// With no address constraint both families map to no matches at all.
func (c *compiler) addrMatch(t datastore.RuleTarget, dir string) (map[int][]string, error) {
	out := map[int][]string{4: nil, 6: nil}
	if t.Selector != "" {
		if _, err := ParseSelector(t.Selector); err != nil {
			return nil, err
		}
		c.setFor(t.Selector)
		out[4] = append(out[4], fmt.Sprintf("ip %s @%s", dir, SetName(t.Selector, false)))
		out[6] = append(out[6], fmt.Sprintf("ip6 %s @%s", dir, SetName(t.Selector, true)))
	}
	if len(t.Nets) > 0 {
		nets := map[int][]netip.Prefix{}
		for _, n := range t.Nets {
			p, err := netip.ParsePrefix(n)
			if err != nil {
				a, aerr := netip.ParseAddr(n)
				if aerr != nil {
					return nil, fmt.Errorf("net %q is not a CIDR (example: 10.0.0.0/8)", n)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			fam := 4
			if p.Addr().Is6() {
				fam = 6
			}
			nets[fam] = append(nets[fam], p.Masked())
		}
		for _, fam := range []int{4, 6} {
			if len(nets[fam]) == 0 {
				delete(out, fam)
				continue
			}
			kw := "ip"
			if fam == 6 {
				kw = "ip6"
			}
			out[fam] = append(out[fam], fmt.Sprintf("%s %s { %s }", kw, dir, joinPrefixes(nets[fam])))
		}
	}
	return out, nil
}

// joinPrefixes lists prefixes without those another one covers (nftables
// refuses overlapping intervals in one set).
func joinPrefixes(ps []netip.Prefix) string {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Bits() < ps[j].Bits() })
	var keep []string
	for i, p := range ps {
		covered := false
		for _, q := range ps[:i] {
			covered = covered || (q.Bits() <= p.Bits() && q.Contains(p.Addr()))
		}
		if !covered {
			keep = append(keep, p.String())
		}
	}
	return strings.Join(keep, ", ")
}

func protoMatch(p string) ([]string, error) {
	switch strings.ToLower(p) {
	case "":
		return nil, nil
	case "tcp", "udp":
		return []string{"meta l4proto " + strings.ToLower(p)}, nil
	case "icmp":
		return []string{"meta l4proto icmp"}, nil
	case "icmpv6":
		return []string{"meta l4proto ipv6-icmp"}, nil
	}
	if n, err := strconv.Atoi(p); err == nil && n >= 0 && n <= 255 {
		return []string{"meta l4proto " + strconv.Itoa(n)}, nil
	}
	return nil, fmt.Errorf("protocol %q must be TCP, UDP, ICMP, ICMPv6 or a number 0-255", p)
}

func portList(ports []datastore.Port) (string, error) {
	var out []string
	for _, p := range ports {
		lo, hi, isRange := strings.Cut(string(p), ":")
		l, err1 := strconv.Atoi(lo)
		h, err2 := l, error(nil)
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || l < 0 || h > 65535 || l > h {
			return "", fmt.Errorf("port %q must be a number 0-65535 or a range LOW:HIGH", string(p))
		}
		if isRange {
			out = append(out, fmt.Sprintf("%d-%d", l, h))
		} else {
			out = append(out, strconv.Itoa(l))
		}
	}
	return strings.Join(out, ", "), nil
}

// setFor notes that a selector needs its sets.
func (c *compiler) setFor(sel string) {
	if !c.sets[sel] {
		c.sets[sel] = true
		c.order = append(c.order, sel)
	}
}

// writeSets declares, per selector, the sets of the addresses of every
// endpoint in the cluster that it selects. With an index (Input.Members)
// the elements stay out of the script: the index owns them and the
// enforcer takes them from it (Enforcer.ApplyIndexed), so a local change
// costs the local endpoints, not the cluster. Without one they are written
// in.
func (c *compiler) writeSets(b *strings.Builder, srcs []string) {
	for _, src := range srcs {
		for _, fam := range []struct {
			typ string
			v6  bool
		}{{"ipv4_addr", false}, {"ipv6_addr", true}} {
			name := SetName(src, fam.v6)
			// The comment names the selector by hash: no user text enters
			// the ruleset (a newline in a label value would end the
			// statement; nft refuses comments past 128 bytes).
			fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tcomment \"selector %s\"\n", name, fam.typ, SelectorDigest(src))
			if c.in.Members == nil {
				if elems, _ := c.members.Elements(name); len(elems) > 0 {
					fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
				}
			}
			b.WriteString("\t}\n")
		}
	}
}

// SelectorDigest names a selector in the ruleset: the first 16 hex digits
// of its SHA-256.
func SelectorDigest(src string) string {
	sum := sha256.Sum256([]byte(src))
	return hex.EncodeToString(sum[:8])
}

// Validate checks a policy's selector and rules, naming the bad field.
func Validate(p datastore.NetworkPolicy) error {
	if _, err := ParseSelector(p.Selector); err != nil {
		return fmt.Errorf("NetworkPolicy %s: spec.selector: %w", p.Name, err)
	}
	return ValidateRules("NetworkPolicy "+p.Name, p.Ingress, p.Egress)
}

// ValidateRules checks ingress and egress rules of a policy or profile.
func ValidateRules(owner string, ingress, egress []datastore.Rule) error {
	c := &compiler{sets: map[string]bool{}}
	for dir, rules := range map[string][]datastore.Rule{"ingress": ingress, "egress": egress} {
		for i, r := range rules {
			if _, err := c.rule(r, "accept"); err != nil {
				return fmt.Errorf("%s: spec.%s[%d]: %w", owner, dir, i, err)
			}
		}
	}
	return nil
}
