// Package e2e drives tabby the way a user does: the real docker CLI against
// real dockerd daemons in lab hosts, a real etcd, real kernel routes.
package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread switched into the network namespace at path,
// and back: sockets fn opens stay in that namespace.
func inNetns(path string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

func must(t *testing.T, h *lab.Host, args ...string) string {
	t.Helper()
	out, err := h.Docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func mustExec(t *testing.T, h *lab.Host, args ...string) string {
	t.Helper()
	out, err := h.Exec(args...)
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", strings.Join(args, " "), h.Name, err, out)
	}
	return out
}

func mustTabby(t *testing.T, h *lab.Host, args ...string) string {
	t.Helper()
	out, err := h.Tabby(args...)
	if err != nil {
		t.Fatalf("tabby %s on %s: %v\n%s", strings.Join(args, " "), h.Name, err, out)
	}
	return out
}

// ipOf returns a container's address on a network.
func ipOf(t *testing.T, h *lab.Host, ctr, netName string) string {
	t.Helper()
	return must(t, h, "inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", netName), ctr)
}

// endpointOf returns a container's endpoint ID on a network.
func endpointOf(t *testing.T, h *lab.Host, ctr, netName string) string {
	t.Helper()
	return must(t, h, "inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).EndpointID}}", netName), ctr)
}

func hostIf(endpointID string) string { return "cali" + endpointID[:11] }

// pings reports whether ctr reaches ip.
func pings(h *lab.Host, ctr, ip string) (string, bool) {
	out, err := h.Docker("exec", ctr, "ping", "-c", "2", "-W", "2", ip)
	return out, err == nil && strings.Contains(out, " 0% packet loss")
}

func mustPing(t *testing.T, h *lab.Host, ctr, ip string) {
	t.Helper()
	if out, ok := pings(h, ctr, ip); !ok {
		t.Fatalf("%s cannot ping %s:\n%s", ctr, ip, out)
	}
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() (string, bool)) {
	t.Helper()
	d = lab.Slow(d)
	deadline := time.Now().Add(d)
	var last string
	for {
		var ok bool
		if last, ok = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s; last seen:\n%s", what, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createEverywhere creates a tabby network on origin and waits until every
// other host's Docker has it (tabby mirrors it there).
func createEverywhere(t *testing.T, l *lab.Lab, origin *lab.Host, name string, args ...string) {
	t.Helper()
	must(t, origin, append(append([]string{"network", "create", tabbyNet, tabbyIPAM}, args...), name)...)
	for _, h := range l.Hosts {
		if h == origin {
			continue
		}
		eventually(t, 15*time.Second, name+" on "+h.Name, func() (string, bool) {
			out, _ := h.Docker("network", "ls", "--format", "{{.Name}} {{.Driver}}")
			return out, strings.Contains(out, name+" tabby")
		})
	}
}

// handleOf returns the IPAM handle holding ip, "-" when it is free (from
// `tabby ipam show --ip`), or "" when that fails.
func handleOf(h *lab.Host, ip string) (handle, out string) {
	out, err := h.Tabby("ipam", "show", "--ip", ip)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) < 2 {
		return "", out
	}
	if f := strings.Fields(lines[1]); len(f) >= 4 && f[0] == ip { // ENDPOINT may hold spaces
		return f[2], out
	}
	return "", out
}

// meshPeerUp reports whether `tabby node status` output shows addr as an
// established node-to-node mesh peer.
func meshPeerUp(status, addr string) bool {
	return regexp.MustCompile(`\| ` + regexp.QuoteMeta(addr) + ` +\| node-to-node mesh \| up +\| \d{4}-\d\d-\d\d \| Established \|`).MatchString(status)
}

// labStore opens the lab's etcd straight, as an attacker or an operator
// with etcdctl would; it is closed when the test ends.
func labStore(t *testing.T, l *lab.Lab) *datastore.Store {
	t.Helper()
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: l.EtcdEndpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// serveIn listens on addr in the namespace at ns and hands every
// connection to serve (which closes it), until the test ends.
func serveIn(t testing.TB, ns, addr string, serve func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
}

// routesVia lists h's tabby routes (proto 77) through gateway gw.
func routesVia(h *lab.Host, gw string) []string {
	r, _ := h.Exec("ip", "route", "show", "proto", "77")
	var out []string
	for _, line := range strings.Split(r, "\n") {
		if strings.Contains(line, "via "+gw+" ") {
			out = append(out, line)
		}
	}
	return out
}

// benchLab is a lab of n hosts for a throughput benchmark (which needs
// iperf3), and a docker helper that fails the benchmark.
func benchLab(b *testing.B, n int) (*lab.Lab, func(h *lab.Host, args ...string) string) {
	b.Helper()
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (apt-get install iperf3): " + err.Error())
	}
	l := lab.New(b, lab.Options{Hosts: n})
	return l, func(h *lab.Host, args ...string) string {
		out, err := h.Docker(args...)
		if err != nil {
			b.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		return out
	}
}
