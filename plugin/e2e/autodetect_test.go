package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// Seed 002's five IP_AUTODETECTION_METHOD cases on two hosts with two NICs
// each on two subnets (10.26.0.0/24 and 10.30.0.0/24 stand for the seed's
// 192.168.26.0/24 and 192.168.30.0/24, which would overlap the default pool):
// each method picks the NIC the seed says, and routes to the other host's
// block go via that NIC's subnet.
func TestSeed002Autodetection(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2, NICs: [][]lab.NIC{
		{{Name: "ens32", CIDR: "10.26.0.71/24"}, {Name: "ens33", CIDR: "10.30.0.71/24"}}, // vms71
		{{Name: "eth0", CIDR: "10.30.0.72/24"}, {Name: "eth1", CIDR: "10.26.0.72/24"}},   // vms72
	}})
	vms71, vms72 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, vms71, "net1")
	must(t, vms71, "run", "--net", "net1", "--name", "pod1", "-tid", "busybox")
	must(t, vms72, "run", "--net", "net1", "--name", "pod2", "-tid", "busybox")
	ip1, ip2 := ipOf(t, vms71, "pod1", "net1"), ipOf(t, vms72, "pod2", "net1")

	cases := []struct {
		method             string
		subnet, if71, if72 string
	}{
		{"interface=ens33,eth0", "10.30.0.", "ens33", "eth0"},
		{"interface=ens32,eth1", "10.26.0.", "ens32", "eth1"},
		{"skip-interface=eth1,ens32", "10.30.0.", "ens33", "eth0"},
		{"can-reach=10.30.0.1", "10.30.0.", "ens33", "eth0"},
		{"cidr=10.26.0.0/24", "10.26.0.", "ens32", "eth1"},
	}
	for _, c := range cases {
		t.Run(c.method, func(t *testing.T) {
			for _, h := range []*lab.Host{vms71, vms72} {
				h.StopTabby()
				h.StartTabby("IP=autodetect", "IP_AUTODETECTION_METHOD="+c.method)
			}
			nodes := mustTabby(t, vms71, "get", "nodes")
			for host, want := range map[string]string{"node00": c.subnet + "71/24", "node01": c.subnet + "72/24"} {
				if !strings.Contains(nodes, host+"  "+want) {
					t.Fatalf("%s: %s should register %s:\n%s", c.method, host, want, nodes)
				}
			}
			want71 := blockOf(ip2) + " via " + c.subnet + "72 dev " + c.if71 + " proto 77"
			want72 := blockOf(ip1) + " via " + c.subnet + "71 dev " + c.if72 + " proto 77"
			eventually(t, 30*time.Second, "routes via "+c.subnet+"0/24", func() (string, bool) {
				r71, _ := vms71.Exec("ip", "route")
				r72, _ := vms72.Exec("ip", "route")
				return "vms71:\n" + r71 + "\nvms72:\n" + r72,
					strings.Contains(r71, want71) && strings.Contains(r72, want72)
			})
			mustPing(t, vms71, "pod1", ip2)
		})
	}
}
