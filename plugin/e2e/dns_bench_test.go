package e2e

import (
	"net"
	"sort"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// dialIn opens a UDP "connection" to addr from inside the namespace at path.
func dialIn(b *testing.B, path, addr string) net.Conn {
	var c net.Conn
	if err := inNetns(path, func() (err error) { c, err = net.Dial("udp", addr); return err }); err != nil {
		b.Fatal(err)
	}
	return c
}

// queryLoop sends n A queries for name over conn, one after another, and
// returns each round trip.
func queryLoop(b *testing.B, conn net.Conn, name string, n int) []time.Duration {
	c := &mdns.Conn{Conn: conn}
	out := make([]time.Duration, 0, n)
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	for i := 0; i < n; i++ {
		m.Id = mdns.Id()
		start := time.Now()
		conn.SetDeadline(start.Add(2 * time.Second))
		if err := c.WriteMsg(m); err != nil {
			b.Fatal(err)
		}
		r, err := c.ReadMsg()
		if err != nil || len(r.Answer) == 0 {
			b.Fatalf("query %s: %v %v", name, err, r)
		}
		out = append(out, time.Since(start))
	}
	return out
}

// BenchmarkDNS: queries per second (one client, back to back) and median
// latency, from a container, of tabby's resolver for a name on another
// host, against Docker's embedded resolver for a name it answers itself
// (a container on the same host), interleaved in one run.
func BenchmarkDNS(b *testing.B) {
	l := lab.New(b, lab.Options{Hosts: 2, DNS: true})
	fakeUpstream(b, l)
	n0, n1 := l.Hosts[0], l.Hosts[1]
	for _, args := range [][]string{{"network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "net1"}} {
		if out, err := n0.Docker(args...); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
	run := func(h *lab.Host, name string) string {
		for i := 0; i < 100; i++ {
			if out, err := h.Docker("run", "--net", "net1", "--name", name, "-tid", "busybox"); err == nil {
				pid, _ := h.Docker("inspect", "-f", "{{.State.Pid}}", name)
				return "/proc/" + pid + "/ns/net"
			} else if i == 99 {
				b.Fatalf("%v %s", err, out)
			}
			time.Sleep(100 * time.Millisecond) // the mirrored network may not be there yet
		}
		return ""
	}
	aNS := run(n0, "containerA")
	run(n0, "containerB")
	run(n1, "containerC")
	tabby := dialIn(b, aNS, n0.Addr+":53")
	docker := dialIn(b, aNS, "127.0.0.11:53")
	defer tabby.Close()
	defer docker.Close()
	// Wait until tabby knows containerC (its name comes from Docker's
	// events), asking from containerA's namespace.
	for i := 0; ; i++ {
		m := new(mdns.Msg)
		m.SetQuestion("containerC.", mdns.TypeA)
		c := &mdns.Conn{Conn: tabby}
		tabby.SetDeadline(time.Now().Add(time.Second))
		if c.WriteMsg(m) == nil {
			if r, err := c.ReadMsg(); err == nil && len(r.Answer) > 0 {
				break
			}
		}
		if i > 100 {
			b.Fatal("tabby never answered containerC")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var tt, dt []time.Duration
	var tTook, dTook time.Duration
	for i := 0; i < b.N; i++ {
		for r := 0; r < 10; r++ {
			s := time.Now()
			tt = append(tt, queryLoop(b, tabby, "containerC", 200)...)
			tTook += time.Since(s)
			s = time.Now()
			dt = append(dt, queryLoop(b, docker, "containerB", 200)...)
			dTook += time.Since(s)
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	b.ReportMetric(float64(len(tt))/tTook.Seconds(), "tabby-qps")
	b.ReportMetric(float64(len(dt))/dTook.Seconds(), "docker-qps")
	b.ReportMetric(float64(med(tt).Microseconds()), "tabby-median-us")
	b.ReportMetric(float64(med(dt).Microseconds()), "docker-median-us")
	b.ReportMetric((float64(len(tt))/tTook.Seconds())/(float64(len(dt))/dTook.Seconds()), "qps-ratio-tabby/docker")
}
