package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// talk sends msg over proto to addr from the namespace at ns and returns
// the first answer.
func talk(ns, proto, addr, msg string) (string, error) {
	var c net.Conn
	if err := inNetns(ns, func() (err error) { c, err = net.DialTimeout(proto, addr, 3*time.Second); return err }); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// udpEcho builds the tests' UDP echo server into dir.
func udpEcho(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "udpecho")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/udpecho")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build udpecho: %v\n%s", err, b)
	}
	return out
}

// docker run -p on a tabby network publishes like Docker's bridge: the
// port answers at the host's address from other machines (DNAT) and from
// the host itself, 127.0.0.1 included (the proxy), for TCP and UDP; a
// taken port fails docker run with a clear error and leaves nothing; a
// policy can deny published traffic; the port is gone once the container
// stops.
func TestPublishedPorts(t *testing.T) {
	const fault = "publish"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	echo := udpEcho(t, l.Dir)
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "-d", "--net", "net1", "--name", "web", "-p", "8080:80", "-p", "9090:9090/udp",
		"-v", echo+":/udpecho:ro", "--label", "tabby.label.app=web",
		"busybox", "sh", "-c", "/udpecho 9090 & exec nc -ll -p 80 -e echo published")
	// DNATed traffic reaches the container from its sender's address.
	from := map[string]struct{ ns, addr, source string }{
		"another machine (DNAT)":       {l.SwitchNS(), n0.Addr, "10.99.0.1"},
		"another tabby host (DNAT)":    {"/run/netns/" + n1.NS, n0.Addr, n1.Addr},
		"the host itself (proxy)":      {"/run/netns/" + n0.NS, n0.Addr, ""},
		"the host's 127.0.0.1 (proxy)": {"/run/netns/" + n0.NS, "127.0.0.1", ""},
	}
	for who, f := range from {
		var got string
		var err error
		for i := 0; i < 20; i++ { // the DNAT rule follows the endpoint record by a watch round trip
			if got, err = talk(f.ns, "tcp", net.JoinHostPort(f.addr, "8080"), "hi\n"); got == "published" {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		report(t, fault, "-p 8080:80 from "+who, fmt.Sprintf("%q %v", got, err), got == "published")
		got, err = talk(f.ns, "udp", net.JoinHostPort(f.addr, "9090"), "ping")
		ok := strings.HasPrefix(got, "udp:") && strings.HasSuffix(got, ":ping") && (f.source == "" || got == "udp:"+f.source+":ping")
		report(t, fault, "-p 9090:9090/udp from "+who, fmt.Sprintf("%q %v", got, err), ok)
	}

	// Docker shows a plugin's mappings nowhere (it reads them only from
	// its own drivers); tabby lists them.
	weps := mustTabby(t, n0, "get", "workloadendpoints")
	shown := strings.Contains(weps, "*:8080->80/tcp") && strings.Contains(weps, "*:9090->9090/udp")
	report(t, fault, "tabby get workloadendpoints lists the mappings", fmt.Sprint(shown), shown)
	// -P publishes what the container exposes on a free port; a pool
	// without outgoing NAT publishes as well (the reply is un-DNATed).
	applyYAML(t, l, n0, "nonat.yaml", "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: nonat}\nspec: {cidr: 10.20.0.0/16, natOutgoing: false}\n")
	must(t, n0, "network", "create", tabbyNet, tabbyIPAM, "--subnet", "10.20.0.0/16", "nonat")
	must(t, n0, "run", "-d", "--net", "net1", "--name", "any", "-P", "--expose", "7070", "busybox", "nc", "-ll", "-p", "7070", "-e", "echo", "exposed")
	must(t, n0, "run", "-d", "--net", "nonat", "--name", "plain", "-p", "8282:80", "busybox", "nc", "-ll", "-p", "80", "-e", "echo", "no-nat")
	weps = mustTabby(t, n0, "get", "workloadendpoints")
	m := regexp.MustCompile(`\*:(\d+)->7070/tcp`).FindStringSubmatch(weps)
	got := ""
	if m != nil {
		for i := 0; i < 20 && got != "exposed"; i++ {
			got, _ = talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, m[1]), "hi\n")
			time.Sleep(250 * time.Millisecond)
		}
	}
	report(t, fault, "-P --expose 7070 from another machine", fmt.Sprintf("port %v: %q", m, got), got == "exposed")
	for i := 0; i < 20 && got != "no-nat"; i++ {
		got, _ = talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8282"), "hi\n")
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "-p 8282:80 in a pool without outgoing NAT, from another machine", fmt.Sprintf("%q", got), got == "no-nat")

	// A port a container holds, and one a host process holds.
	out, err := n0.Docker("run", "-d", "--net", "net1", "--name", "second", "-p", "8080:80", "busybox", "sleep", "600")
	clear := err != nil && strings.Contains(out, "8080") && strings.Contains(out, "already in use")
	report(t, fault, "a second container asks for host port 8080", firstLine(out, "8080"), clear)
	var hostLn net.Listener
	if err := inNetns("/run/netns/"+n0.NS, func() (err error) { hostLn, err = net.Listen("tcp", ":8181"); return err }); err != nil {
		t.Fatal(err)
	}
	defer hostLn.Close()
	out, err = n0.Docker("run", "-d", "--net", "net1", "--name", "third", "-p", "8181:80", "busybox", "sleep", "600")
	clear = err != nil && strings.Contains(out, "8181") && strings.Contains(out, "already in use")
	report(t, fault, "a container asks for a port a host process holds", firstLine(out, "8181"), clear)
	got, _ = talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8080"), "hi\n")
	report(t, fault, "the first container's port after the refusals", fmt.Sprintf("%q", got), got == "published")
	for _, name := range []string{"second", "third"} {
		n0.Docker("rm", "-f", name)
	}

	// A policy denies what comes from the switch; another host still gets in.
	applyYAML(t, l, n0, "deny.yaml", "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: no-lan}\n"+
		"spec: {order: 1, selector: app == 'web', ingress: [{action: Deny, source: {nets: [10.99.0.1/32]}}]}\n")
	denied := false
	for i := 0; i < 20 && !denied; i++ {
		_, err := talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8080"), "hi\n")
		denied = err != nil
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "a policy denying the LAN: published port from another machine", fmt.Sprintf("refused: %v", denied), denied)
	got, _ = talk("/run/netns/"+n1.NS, "tcp", net.JoinHostPort(n0.Addr, "8080"), "hi\n")
	report(t, fault, "the same policy: from another tabby host", fmt.Sprintf("%q", got), got == "published")
	mustTabby(t, n0, "delete", "networkpolicy", "no-lan")

	// The daemon restarts: the ports are held and served again.
	n0.StopTabby()
	n0.StartTabby()
	got = ""
	for i := 0; i < 40 && got != "published"; i++ {
		got, _ = talk("/run/netns/"+n0.NS, "tcp", "127.0.0.1:8080", "hi\n")
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "after the daemon restarts: 127.0.0.1:8080 (the proxy again)", fmt.Sprintf("%q", got), got == "published")

	must(t, n0, "stop", "-t", "1", "web")
	_, err = talk("/run/netns/"+n0.NS, "tcp", "127.0.0.1:8080", "hi\n")
	var rules string
	for i := 0; i < 20; i++ { // the rule follows the endpoint record by a watch round trip
		if rules, _ = n0.Exec("nft", "list", "chain", "inet", "tabby", "publish"); !strings.Contains(rules, "dport 8080 ") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "after docker stop: port 8080 and its DNAT rule", fmt.Sprintf("connect: %v; rule left: %v", err != nil, strings.Contains(rules, "dport 8080 ")),
		err != nil && !strings.Contains(rules, "dport 8080 "))
}

// -o tabby.publish=everywhere: a port published by a container on one host
// answers on every tabby host (as swarm's routing mesh, without swarm or
// encapsulation), from other machines and from the host itself; a network
// without it publishes on the container's host only.
func TestPublishEverywhere(t *testing.T) {
	const fault = "publish"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "mesh", "-o", "tabby.publish=everywhere")
	createEverywhere(t, l, n0, "plain")
	must(t, n1, "run", "-d", "--net", "mesh", "--name", "web", "-p", "8090:80", "busybox", "nc", "-ll", "-p", "80", "-e", "echo", "mesh")
	must(t, n1, "run", "-d", "--net", "plain", "--name", "local", "-p", "8091:80", "busybox", "nc", "-ll", "-p", "80", "-e", "echo", "local")
	for _, c := range []struct {
		what, ns, addr, port, want string
	}{
		{"a mesh port, from another machine, at the other host", l.SwitchNS(), n0.Addr, "8090", "mesh"},
		{"a mesh port, from the other host itself", "/run/netns/" + n0.NS, n0.Addr, "8090", "mesh"},
		{"a mesh port, at the container's own host", l.SwitchNS(), n1.Addr, "8090", "mesh"},
		{"a host-only port, at its own host", l.SwitchNS(), n1.Addr, "8091", "local"},
	} {
		got := ""
		for i := 0; i < 20 && got != c.want; i++ {
			got, _ = talk(c.ns, "tcp", net.JoinHostPort(c.addr, c.port), "hi\n")
			time.Sleep(250 * time.Millisecond)
		}
		report(t, fault, c.what, fmt.Sprintf("%q", got), got == c.want)
	}
	_, err := talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8091"), "hi\n")
	report(t, fault, "a host-only port at the other host", fmt.Sprintf("refused: %v", err != nil), err != nil)
	must(t, n1, "rm", "-f", "web")
	gone := false
	for i := 0; i < 20 && !gone; i++ {
		_, err = talk(l.SwitchNS(), "tcp", net.JoinHostPort(n0.Addr, "8090"), "hi\n")
		gone = err != nil
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "the mesh port on the other host once the container is gone", fmt.Sprintf("refused: %v", gone), gone)
}

// -p on a dual-stack network answers at the host's IPv6 address too: from
// another machine by DNAT to the container's IPv6 address, and on the
// host's ::1 through the proxy.
func TestPublishedPortsIPv6(t *testing.T) {
	const fault = "publish"
	l := lab.New(t, lab.Options{Hosts: 1, IPv6: true})
	n0 := l.Hosts[0]
	echo := udpEcho(t, l.Dir)
	must(t, n0, "network", "create", tabbyNet, tabbyIPAM, "--ipv6", "dual")
	must(t, n0, "run", "-d", "--net", "dual", "--name", "web6", "-p", "8080:80", "-p", "9090:9090/udp", "-v", echo+":/udpecho:ro",
		"busybox", "sh", "-c", "/udpecho 9090 & exec nc -ll -p 80 -e echo published")
	for _, c := range []struct{ what, ns, addr string }{
		{"from another machine, at the host's IPv6 address (DNAT)", l.SwitchNS(), n0.Addr6},
		{"from the host itself, at ::1 (proxy)", "/run/netns/" + n0.NS, "::1"},
	} {
		got := ""
		for i := 0; i < 20 && got != "published"; i++ {
			got, _ = talk(c.ns, "tcp", net.JoinHostPort(c.addr, "8080"), "hi\n")
			time.Sleep(250 * time.Millisecond)
		}
		report(t, fault, "-p 8080:80 "+c.what, fmt.Sprintf("%q", got), got == "published")
	}
	got, err := talk(l.SwitchNS(), "udp", net.JoinHostPort(n0.Addr6, "9090"), "ping")
	report(t, fault, "-p 9090:9090/udp from another machine over IPv6 (the container sees the client)", fmt.Sprintf("%q %v", got, err),
		got == "udp:"+lab.Underlay6+"1:ping")
}
