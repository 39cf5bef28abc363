package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// --internal on a tabby network: containers reach each other across hosts
// and nothing else (no default route, no host, no LAN), not even after
// adding a default route themselves; no port is published; the mirror on
// the other host is internal too.
func TestInternalNetwork(t *testing.T) {
	const fault = "internal"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "inet", "--internal")
	mirror, _ := n1.Docker("network", "inspect", "-f", "{{.Internal}}", "inet")
	report(t, fault, "the mirror on node01 is internal", mirror, mirror == "true")
	if out, err := n0.Docker("run", "--net", "inet", "--name", "inA", "-tid", "busybox"); err != nil {
		t.Fatalf("run on the internal network: %v\n%s", err, out)
	}
	must(t, n1, "run", "--net", "inet", "--name", "inB", "-tid", "busybox")
	must(t, n0, "run", "--net", "inet", "--name", "rogue", "--cap-add", "NET_ADMIN", "-tid", "busybox")
	ipB := ipOf(t, n1, "inB", "inet")
	eventually(t, 30e9, "a reaches b on the other host", func() (string, bool) { return pings(n0, "inA", ipB) })
	report(t, fault, "a container reaches one of its network on another host", "ping ok", true)
	routes, _ := n0.Docker("exec", "inA", "ip", "route")
	report(t, fault, "the container's routes", strings.ReplaceAll(routes, "\n", "; "), !strings.Contains(routes, "default"))
	for what, ip := range map[string]string{"the LAN (10.99.0.1)": "10.99.0.1", "its host": n0.Addr, "the other host": n1.Addr} {
		_, ok := pings(n0, "inA", ip)
		report(t, fault, "a container pings "+what, fmt.Sprintf("reached: %v", ok), !ok)
	}
	// A container that adds its own default route is still held in.
	n0.Docker("exec", "rogue", "ip", "route", "add", "default", "via", "169.254.1.1")
	_, ok := pings(n0, "rogue", "10.99.0.1")
	report(t, fault, "a container with NET_ADMIN adds a default route and pings the LAN", fmt.Sprintf("reached: %v", ok), !ok)
	_, ok = pings(n0, "rogue", n0.Addr)
	report(t, fault, "that container pings its host", fmt.Sprintf("reached: %v", ok), !ok)
	_, ok = pings(n0, "rogue", ipB)
	report(t, fault, "that container still reaches its network", fmt.Sprintf("reached: %v", ok), ok)
	// Publishing: refused or nothing published, never reachable.
	out, err := n0.Docker("run", "-d", "--net", "inet", "--name", "web", "-p", "8088:80", "busybox", "nc", "-ll", "-p", "80", "-e", "echo", "published")
	got, terr := talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8088"), "hi\n")
	report(t, fault, "docker run -p 8088:80 on it, then the port from the LAN",
		fmt.Sprintf("run: %v %s; answer %q", err != nil, firstLine(out, "internal"), got), terr != nil && got == "")
}
