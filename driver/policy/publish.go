package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/driver/dataplane"
)

// writePublish writes the published ports' NAT: DNAT for traffic from
// other machines to this host's containers (the host's own and its
// containers' connections go to the port's proxy) and, for ports published
// everywhere, to other hosts' containers, from other machines and from the
// host itself, masqueraded so the reply comes back through this host.
func writePublish(b *strings.Builder, local []string, remote []Endpoint, nodes []netip.Addr) {
	var far, targets4, targets6 []string
	for _, e := range remote {
		// Marked, so the host's forwarding rules let them through.
		for _, r := range publishRules(e) {
			far = append(far, strings.Replace(r, " dnat ", fmt.Sprintf(" ct mark set ct mark or %#x dnat ", dataplane.PublishMark), 1))
		}
		for _, a := range e.Addrs {
			if a.Is4() {
				targets4 = append(targets4, a.String())
			} else {
				targets6 = append(targets6, a.String())
			}
		}
	}
	if len(nodes) > 0 {
		for fam, typ := range map[int]string{4: "ipv4_addr", 6: "ipv6_addr"} {
			var elems []string
			for _, a := range nodes {
				if a.Is4() == (fam == 4) {
					elems = append(elems, a.String())
				}
			}
			fmt.Fprintf(b, "\tset nodes_%d {\n\t\ttype %s\n", fam, typ)
			if len(elems) > 0 {
				sort.Strings(elems)
				fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
			}
			b.WriteString("\t}\n")
		}
	}
	if len(local)+len(far) > 0 {
		b.WriteString("\tchain publish {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tiifname \"cali*\" return\n")
		for _, l := range append(local, far...) {
			fmt.Fprintf(b, "\t\t%s\n", l)
		}
		b.WriteString("\t}\n")
	}
	if len(far) > 0 {
		// Loopback stays the host's: a DNAT from 127.0.0.1 cannot leave it.
		b.WriteString("\tchain publish-out {\n\t\ttype nat hook output priority -100; policy accept;\n" +
			"\t\tip daddr 127.0.0.0/8 return\n\t\tip6 daddr ::1 return\n")
		for _, l := range far {
			fmt.Fprintf(b, "\t\t%s\n", l)
		}
		b.WriteString("\t}\n\tchain publish-snat {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
		if len(targets4) > 0 {
			fmt.Fprintf(b, "\t\tct status dnat ip daddr { %s } masquerade\n", strings.Join(targets4, ", "))
		}
		if len(targets6) > 0 {
			fmt.Fprintf(b, "\t\tct status dnat ip6 daddr { %s } masquerade\n", strings.Join(targets6, ", "))
		}
		b.WriteString("\t}\n")
	}
}

// publishRules DNATs an endpoint's published ports: a port on every
// address (HostIP "", 0.0.0.0 or ::) to the container's address of the
// packet's family, a port on one address to the container's address of
// that family. A family the container lacks is left to the port's proxy.
func publishRules(e Endpoint) []string {
	var v4, v6 netip.Addr
	for _, a := range e.Addrs {
		if a.Is4() && !v4.IsValid() {
			v4 = a
		} else if a.Is6() && !v6.IsValid() {
			v6 = a
		}
	}
	var out []string
	for _, p := range e.Ports {
		if p.Proto != "tcp" && p.Proto != "udp" {
			continue
		}
		for _, f := range []struct {
			to            netip.Addr
			nf, ip, anyIP string
		}{{v4, "ipv4", "ip", "0.0.0.0"}, {v6, "ipv6", "ip6", "::"}} {
			if !f.to.IsValid() {
				continue
			}
			match := ""
			switch h, err := netip.ParseAddr(p.HostIP); {
			case p.HostIP == "" || p.HostIP == f.anyIP:
				match = fmt.Sprintf("meta nfproto %s fib daddr type local", f.nf)
			case err == nil && h.Is4() == (f.ip == "ip"):
				match = fmt.Sprintf("%s daddr %s", f.ip, h)
			default:
				continue
			}
			dest := netip.AddrPortFrom(f.to, p.Port).String()
			out = append(out, fmt.Sprintf("%s %s dport %d dnat %s to %s", match, p.Proto, p.HostPort, f.ip, dest))
		}
	}
	return out
}
