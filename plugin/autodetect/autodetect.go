// Package autodetect picks the host's IPv4 (or IPv6) address the way Calico's
// IP_AUTODETECTION_METHOD does: first-found, interface=REGEX[,REGEX],
// skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR]. The choice
// is pure logic over a list of interfaces; reading them is netlink's job.
package autodetect

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Iface is one interface and its addresses with prefix length.
type Iface struct {
	Name  string
	Addrs []netip.Prefix
}

// Router answers which local address the host uses to reach dest.
type Router func(dest netip.Addr) (src netip.Addr, err error)

// excluded are interfaces first-found never picks: container plumbing,
// tunnels and loopback.
var excluded = regexp.MustCompile(`^(docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|lo|cali.*|tunl.*|flannel.*|kube-ipvs.*|cni.*|vxlan.*|vxlan\.tabby|weave.*|br-.*|tmp.*)$`)

// Result is the chosen address and the interface that holds it.
type Result struct {
	Addr  netip.Prefix
	Iface string
}

// Detect applies method to ifaces (in the kernel's order), choosing an
// address of family (4 or 6).
func Detect(method string, family int, ifaces []Iface, route Router) (Result, error) {
	kind, arg, _ := strings.Cut(method, "=")
	first := func(ifOK func(Iface) bool, addrOK func(netip.Prefix) bool) (Result, error) {
		return firstOf(family, ifaces, ifOK, addrOK)
	}
	switch kind {
	case "", "first-found":
		return first(func(i Iface) bool { return !excluded.MatchString(i.Name) }, nil)
	case "interface", "skip-interface":
		res, err := regexes(arg)
		if err != nil {
			return Result{}, fmt.Errorf("IP_AUTODETECTION_METHOD %q: %w", method, err)
		}
		match := func(name string) bool {
			for _, re := range res {
				if re.MatchString(name) {
					return true
				}
			}
			return false
		}
		if kind == "interface" {
			return first(func(i Iface) bool { return match(i.Name) }, nil)
		}
		return first(func(i Iface) bool { return !match(i.Name) && !excluded.MatchString(i.Name) }, nil)
	case "cidr":
		var nets []netip.Prefix
		for _, c := range strings.Split(arg, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				return Result{}, fmt.Errorf("IP_AUTODETECTION_METHOD %q: %q is not a CIDR", method, c)
			}
			nets = append(nets, p.Masked())
		}
		return first(func(Iface) bool { return true }, func(a netip.Prefix) bool {
			for _, n := range nets {
				if n.Contains(a.Addr()) {
					return true
				}
			}
			return false
		})
	case "can-reach":
		dest, err := netip.ParseAddr(arg)
		if err != nil {
			return Result{}, fmt.Errorf("IP_AUTODETECTION_METHOD %q: can-reach takes an IP address", method)
		}
		if route == nil {
			return Result{}, errors.New("can-reach needs a route lookup")
		}
		src, err := route(dest)
		if err != nil {
			return Result{}, fmt.Errorf("IP_AUTODETECTION_METHOD %q: no route to %s: %w", method, dest, err)
		}
		return first(func(Iface) bool { return true }, func(a netip.Prefix) bool { return a.Addr() == src })
	}
	return Result{}, fmt.Errorf("IP_AUTODETECTION_METHOD %q: use first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST or cidr=CIDR", method)
}

func regexes(list string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		re, err := regexp.Compile("^(?:" + s + ")$")
		if err != nil {
			return nil, fmt.Errorf("%q is not a regular expression: %w", s, err)
		}
		out = append(out, re)
	}
	if len(out) == 0 {
		return nil, errors.New("no interface pattern given")
	}
	return out, nil
}

// firstOf returns the first global address of family of the first interface
// that passes ifOK whose address passes addrOK (nil: any).
func firstOf(family int, ifaces []Iface, ifOK func(Iface) bool, addrOK func(netip.Prefix) bool) (Result, error) {
	for _, i := range ifaces {
		if !ifOK(i) {
			continue
		}
		for _, a := range i.Addrs {
			if a.Addr().Is4() != (family == 4) || !a.Addr().IsGlobalUnicast() {
				continue
			}
			if addrOK == nil || addrOK(a) {
				return Result{Addr: a, Iface: i.Name}, nil
			}
		}
	}
	names := make([]string, 0, len(ifaces))
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	if family == 6 {
		return Result{}, fmt.Errorf("no interface with a global IPv6 address matches (have %s): set IP6 or IP6_AUTODETECTION_METHOD", strings.Join(names, ", "))
	}
	return Result{}, fmt.Errorf("no interface matches (have %s): set IP or another IP_AUTODETECTION_METHOD", strings.Join(names, ", "))
}
