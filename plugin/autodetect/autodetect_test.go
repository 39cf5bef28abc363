package autodetect

import (
	"net/netip"
	"strings"
	"testing"
)

func ifs(spec ...string) []Iface {
	var out []Iface
	for _, s := range spec {
		name, addr, _ := strings.Cut(s, " ")
		i := Iface{Name: name}
		if addr != "" {
			i.Addrs = append(i.Addrs, netip.MustParsePrefix(addr))
		}
		out = append(out, i)
	}
	return out
}

// Seed 002's hosts: vms71 has ens32 on 192.168.26.0/24 and ens33 on
// 192.168.30.0/24; vms72 has eth0 on .30 and eth1 on .26.
var (
	vms71 = ifs("lo 127.0.0.1/8", "docker0 172.17.0.1/16", "ens32 192.168.26.71/24", "ens33 192.168.30.71/24")
	vms72 = ifs("lo 127.0.0.1/8", "eth0 192.168.30.72/24", "eth1 192.168.26.72/24", "cali1234567890a")
)

func routeVia(hostIfs []Iface) Router {
	return func(dest netip.Addr) (netip.Addr, error) {
		for _, i := range hostIfs {
			for _, a := range i.Addrs {
				if a.Masked().Contains(dest) {
					return a.Addr(), nil
				}
			}
		}
		return netip.Addr{}, errNoRoute
	}
}

type noRoute struct{}

func (noRoute) Error() string { return "network unreachable" }

var errNoRoute = noRoute{}

func TestSeed002Cases(t *testing.T) {
	cases := []struct{ method, want71, want72 string }{
		{"interface=ens33,eth0", "192.168.30.71/24", "192.168.30.72/24"},
		{"interface=ens32,eth1", "192.168.26.71/24", "192.168.26.72/24"},
		{"skip-interface=eth1,ens32", "192.168.30.71/24", "192.168.30.72/24"},
		{"can-reach=192.168.30.1", "192.168.30.71/24", "192.168.30.72/24"},
		{"cidr=192.168.26.0/24", "192.168.26.71/24", "192.168.26.72/24"},
		{"first-found", "192.168.26.71/24", "192.168.30.72/24"},
	}
	for _, c := range cases {
		for host, want := range map[string]string{"vms71": c.want71, "vms72": c.want72} {
			hostIfs := vms71
			if host == "vms72" {
				hostIfs = vms72
			}
			got, err := Detect(c.method, 4, hostIfs, routeVia(hostIfs))
			if err != nil || got.Addr.String() != want {
				t.Errorf("%s on %s: got %v (%s) %v, want %s", c.method, host, got.Addr, got.Iface, err, want)
			}
		}
	}
}

func TestBadMethodsNameTheInput(t *testing.T) {
	for method, want := range map[string]string{
		"guess":              "use first-found",
		"interface=(":        "not a regular expression",
		"cidr=10.0.0.0/33":   "not a CIDR",
		"can-reach=nowhere":  "takes an IP address",
		"can-reach=10.9.9.9": "no route",
		"interface=wlan0":    "no interface matches",
	} {
		if _, err := Detect(method, 4, vms71, routeVia(vms71)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want error containing %q, got %v", method, want, err)
		}
	}
}

func TestPatternsAreAnchored(t *testing.T) {
	got, err := Detect("interface=eth0", 4, ifs("veth0abc 10.1.1.1/24", "eth0 10.2.2.2/24"), nil)
	if err != nil || got.Iface != "eth0" {
		t.Fatalf("interface=eth0 picked %q: the pattern must match whole names", got.Iface)
	}
}

// IPv6: the same methods pick a global IPv6 address, never a link-local one,
// and an interface with only IPv4 is passed over.
func TestIPv6Methods(t *testing.T) {
	host := []Iface{
		{Name: "lo", Addrs: []netip.Prefix{netip.MustParsePrefix("::1/128")}},
		{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.30.72/24"), netip.MustParsePrefix("fe80::1/64")}},
		{Name: "eth1", Addrs: []netip.Prefix{netip.MustParsePrefix("fe80::2/64"), netip.MustParsePrefix("fd00:26::72/64")}},
		{Name: "eth2", Addrs: []netip.Prefix{netip.MustParsePrefix("fd00:30::72/64")}},
	}
	cases := []struct{ method, want string }{
		{"first-found", "fd00:26::72/64"},
		{"interface=eth2", "fd00:30::72/64"},
		{"skip-interface=eth1", "fd00:30::72/64"},
		{"cidr=10.0.0.0/8,fd00:30::/64", "fd00:30::72/64"},
		{"can-reach=fd00:30::1", "fd00:30::72/64"},
	}
	for _, c := range cases {
		got, err := Detect(c.method, 6, host, routeVia(host))
		if err != nil || got.Addr.String() != c.want {
			t.Errorf("%s (IPv6): got %v %v, want %s", c.method, got.Addr, err, c.want)
		}
	}
	if _, err := Detect("interface=eth0", 6, host, nil); err == nil || !strings.Contains(err.Error(), "IP6") {
		t.Errorf("eth0 has only a link-local IPv6 address: want an error naming IP6, got %v", err)
	}
}
