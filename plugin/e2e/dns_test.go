package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// listenIn opens a UDP socket on addr inside the network namespace at path
// (sockets keep the namespace they were made in).
func listenIn(t testing.TB, path, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := inNetns(path, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	return pc
}

// fakeUpstream is "the outside world's" resolver on the lab's switch: it
// knows outside.example (a documentation address; nothing is sent there).
func fakeUpstream(t testing.TB, l *lab.Lab) {
	pc := listenIn(t, l.SwitchNS(), "10.99.0.1:53")
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Name == "outside.example." && q.Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
				A: net.ParseIP("203.0.113.7")})
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// Seed 001's names across hosts: containerA pings containerC on another
// host by name, cannot resolve containerD (another network), resolves
// outside names through the upstream; a removed container's name stops
// resolving, and a container moved to another host resolves to its new
// address.
func TestDNSAcrossHosts(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 3, DNS: true})
	fakeUpstream(t, l)
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	createEverywhere(t, l, n0, "net1")
	createEverywhere(t, l, n0, "net2")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n0, "run", "--net", "net2", "--name", "containerB", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	must(t, n1, "run", "--net", "net2", "--name", "containerD", "-tid", "busybox")
	ipC := ipOf(t, n1, "containerC", "net1")
	lookup := func(h *lab.Host, ctr, name string) string {
		out, _ := h.Docker("exec", ctr, "nslookup", name)
		return out
	}
	eventually(t, 30*time.Second, "containerA resolves containerC on node01", func() (string, bool) {
		out := lookup(n0, "containerA", "containerC")
		return out, strings.Contains(out, ipC)
	})
	// The name can resolve before node00 has the route to node01's block.
	eventually(t, 30*time.Second, "containerA reaches containerC's address", func() (string, bool) {
		return pings(n0, "containerA", ipC)
	})
	out := must(t, n0, "exec", "containerA", "ping", "-c", "3", "containerC")
	if !strings.Contains(out, "3 packets received") || !strings.Contains(out, ipC) {
		t.Fatalf("docker exec containerA ping -c 3 containerC:\n%s", out)
	}
	if out := lookup(n0, "containerA", "containerC.net1"); !strings.Contains(out, ipC) {
		t.Fatalf("NAME.NETWORK does not resolve:\n%s", out)
	}
	if out := lookup(n0, "containerA", "containerD"); strings.Contains(out, ipOf(t, n1, "containerD", "net2")) {
		t.Fatalf("containerA (net1) resolved containerD (net2):\n%s", out)
	}
	if out := lookup(n0, "containerA", "outside.example"); !strings.Contains(out, "203.0.113.7") {
		t.Fatalf("outside names must resolve through the upstream:\n%s", out)
	}

	must(t, n1, "rm", "-f", "containerC")
	start := time.Now()
	eventually(t, 5*time.Second, "containerC stops resolving", func() (string, bool) {
		out := lookup(n0, "containerA", "containerC")
		return out, !strings.Contains(out, ipC)
	})
	t.Logf("removed name gone after %s", time.Since(start).Round(time.Millisecond))
	must(t, n2, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipC2 := ipOf(t, n2, "containerC", "net1")
	eventually(t, 10*time.Second, "containerC resolves on its new host", func() (string, bool) {
		out := lookup(n0, "containerA", "containerC")
		return out, strings.Contains(out, ipC2)
	})
	mustPing(t, n0, "containerA", "containerC")

	// A container named like a real domain does not hide it from
	// containers that do not share its network: they are answered from
	// upstream. Its own network still finds it.
	must(t, n1, "run", "--net", "net2", "--name", "outside.example", "-tid", "busybox")
	shadow := ipOf(t, n1, "outside.example", "net2")
	eventually(t, 10*time.Second, "containerB (net2) resolves the container outside.example", func() (string, bool) {
		out := lookup(n0, "containerB", "outside.example")
		return out, strings.Contains(out, shadow)
	})
	out = lookup(n0, "containerA", "outside.example")
	report(t, "dns", "a container named outside.example does not shadow the real name for other networks",
		"answer from upstream: "+fmt.Sprint(strings.Contains(out, "203.0.113.7")), strings.Contains(out, "203.0.113.7") && !strings.Contains(out, shadow))

	// Not an open resolver: the hosts themselves (another host, and the
	// resolver's own) are refused, and nothing is forwarded for them.
	for _, from := range []*lab.Host{n1, n0} {
		var r *mdns.Msg
		err := inNetns("/run/netns/"+from.NS, func() (err error) {
			m := new(mdns.Msg)
			m.SetQuestion("outside.example.", mdns.TypeA)
			r, _, err = (&mdns.Client{Timeout: 2 * time.Second}).Exchange(m, net.JoinHostPort(n0.Addr, "53"))
			return err
		})
		figure := fmt.Sprint(err)
		if err == nil {
			figure = mdns.RcodeToString[r.Rcode] + fmt.Sprintf(", %d answers", len(r.Answer))
		}
		report(t, "dns", "a query from "+from.Name+"'s own address (not a container) to node00's resolver", figure,
			err == nil && r.Rcode == mdns.RcodeRefused && len(r.Answer) == 0)
	}
}
