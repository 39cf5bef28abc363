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
			got, err := Detect(c.method, hostIfs, routeVia(hostIfs))
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
		if _, err := Detect(method, vms71, routeVia(vms71)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want error containing %q, got %v", method, want, err)
		}
	}
}

func TestPatternsAreAnchored(t *testing.T) {
	got, err := Detect("interface=eth0", ifs("veth0abc 10.1.1.1/24", "eth0 10.2.2.2/24"), nil)
	if err != nil || got.Iface != "eth0" {
		t.Fatalf("interface=eth0 picked %q: the pattern must match whole names", got.Iface)
	}
}
