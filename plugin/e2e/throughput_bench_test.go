package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// netPath is one way from a client network namespace to a server address.
type netPath struct {
	name   string
	client string // network namespace path of the client
	server string // path of the server's namespace
	addr   string // server address
	tput1  []float64
	tput4  []float64
	rtt    []float64
}

// nsRun runs a command in the network namespace at path.
func nsRun(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	return string(out), err
}

// iperfGbps runs iperf3 for 2 s with streams parallel streams and returns
// the received rate in Gbit/s.
func iperfGbps(b *testing.B, p *netPath, streams int) float64 {
	var out string
	var err error
	for try := 0; try < 20; try++ { // the server may still be starting
		if out, err = nsRun(p.client, "iperf3", "-c", p.addr, "-t", "2", "-P", strconv.Itoa(streams), "-J"); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3 over %s: %v\n%s", p.name, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 over %s: unreadable result (%v):\n%s", p.name, err, out)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}

var rttRE = regexp.MustCompile(`round-trip min/avg/max = [\d.]+/([\d.]+)/`)

// rttMs pings back to back (-A) and returns the mean round trip in ms.
func rttMs(b *testing.B, p *netPath) float64 {
	out, err := nsRun(p.client, "busybox", "ping", "-A", "-q", "-c", "300", p.addr)
	m := rttRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		b.Fatalf("ping over %s: %v\n%s", p.name, err, out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// measurePaths runs an iperf3 server behind every path, then rounds of
// TCP with 1 and 4 streams and ping over each path in turn (interleaved, so
// each sees the same load), and reports and returns each path's medians:
// Gbit/s with 1 and 4 streams, round trip in ms.
func measurePaths(b *testing.B, paths []*netPath, rounds int) map[string][3]float64 {
	for _, p := range paths {
		srv := exec.Command("nsenter", "--net="+p.server, "iperf3", "-s")
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	for _, p := range paths { // warm up (ARP, routes, server start)
		rttMs(b, p)
	}
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for _, p := range paths {
				p.tput1 = append(p.tput1, iperfGbps(b, p, 1))
				p.tput4 = append(p.tput4, iperfGbps(b, p, 4))
				p.rtt = append(p.rtt, rttMs(b, p))
			}
		}
	}
	m := map[string][3]float64{}
	for _, p := range paths {
		m[p.name] = [3]float64{medianF(p.tput1), medianF(p.tput4), medianF(p.rtt)}
		b.ReportMetric(m[p.name][0], p.name+"-Gbps-1")
		b.ReportMetric(m[p.name][1], p.name+"-Gbps-4")
		b.ReportMetric(m[p.name][2]*1000, p.name+"-rtt-us")
	}
	return m
}

// waitMirrored waits for network name to show on h.
func waitMirrored(b *testing.B, h *lab.Host, name string) {
	for i := 0; i < 100; i++ {
		if out, _ := h.Docker("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, name) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("network %s not mirrored to %s", name, h.Name)
}

// benchContainer runs a busybox on network and returns its network
// namespace's path and its address there.
func benchContainer(b *testing.B, h *lab.Host, name, network string) (netns, ip string) {
	run := func(args ...string) string {
		out, err := h.Docker(args...)
		if err != nil {
			b.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(out)
	}
	run("run", "--net", network, "--name", name, "-tid", "busybox")
	pid := run("inspect", "-f", "{{.State.Pid}}", name)
	ip = run("inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", network), name)
	return "/proc/" + pid + "/ns/net", ip
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkDataplane: TCP throughput (iperf3, one stream and four) and ping
// round trip between two hosts, in one run, over: tabby unencapsulated,
// tabby VXLAN (each as Docker sets the containers up, and "bare", without
// Docker's embedded-DNS nat rules in the containers), the same routed path
// wired by hand with `ip` (veth, /32 routes, proxy ARP), a hand-wired VXLAN
// path, and the two host namespaces over one veth. Rounds interleave the paths so each sees the same load; the
// medians are compared. Targets: tabby >= 0.97 x hand-wired in throughput and
// <= 1.05 x in round trip; tabby VXLAN >= 0.97 x hand-wired VXLAN.
func BenchmarkDataplane(b *testing.B) {
	l, mustB := benchLab(b, 2)
	n0, n1 := l.Hosts[0], l.Hosts[1]
	pool := "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.70.0.0/16, vxlanMode: Always}\n"
	if out, err := n0.Tabby("apply", "-f", writeFile(b, l, "vx.yaml", pool)); err != nil {
		b.Fatalf("apply: %v %s", err, out)
	}
	mustB(n0, "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "--subnet", "192.168.0.0/16", "plain")
	mustB(n0, "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "--subnet", "10.70.0.0/16", "vx")
	waitMirrored(b, n1, "plain")
	waitMirrored(b, n1, "vx")
	ctrNet := func(h *lab.Host, name, network string) (string, string) { return benchContainer(b, h, name, network) }
	// Docker gives every container on a user-defined network (any plugin's)
	// its embedded DNS resolver: nat rules inside the container, which make
	// the container's namespace track connections. The "-bare" pairs are
	// the same tabby endpoints with those rules removed, to measure tabby's
	// own dataplane against the hand-wired one.
	bare := func(netns string) {
		if out, err := nsRun(netns, "nft", "flush", "ruleset"); err != nil {
			b.Fatalf("remove Docker's DNS rules from %s: %v %s", netns, err, out)
		}
	}
	var paths []*netPath
	for _, c := range []struct{ name, network string }{{"tabby", "plain"}, {"tabby-vxlan", "vx"}} {
		for _, b0 := range []bool{false, true} {
			name := c.name
			if b0 {
				name += "-bare"
			}
			cli, _ := ctrNet(n0, "b0-"+name, c.network)
			srv, ip := ctrNet(n1, "b1-"+name, c.network)
			if b0 {
				bare(cli)
				bare(srv)
			}
			paths = append(paths, &netPath{name: name, client: cli, server: srv, addr: ip})
		}
	}
	hw := newHandWired(b, l, n0, n1)
	paths = append(paths,
		&netPath{name: "hand", client: hw.nsPath(0, false), server: hw.nsPath(1, false), addr: hw.addr(1, false)},
		&netPath{name: "hand-vxlan", client: hw.nsPath(0, true), server: hw.nsPath(1, true), addr: hw.addr(1, true)},
		&netPath{name: "direct", client: "/run/netns/" + n0.NS, server: "/run/netns/" + n1.NS, addr: hw.directAddr(1)})
	m := measurePaths(b, paths, 5)
	for _, v := range []string{"", "-bare"} {
		b.ReportMetric(m["tabby"+v][0]/m["hand"][0], "tput1"+v+"-vs-hand(target>=0.97)")
		b.ReportMetric(m["tabby"+v][1]/m["hand"][1], "tput4"+v+"-vs-hand(target>=0.97)")
		b.ReportMetric(m["tabby"+v][2]/m["hand"][2], "rtt"+v+"-vs-hand(target<=1.05)")
		b.ReportMetric(m["tabby-vxlan"+v][0]/m["hand-vxlan"][0], "vxlan-tput1"+v+"-vs-hand(target>=0.97)")
		b.ReportMetric(m["tabby-vxlan"+v][1]/m["hand-vxlan"][1], "vxlan-tput4"+v+"-vs-hand(target>=0.97)")
	}
	b.ReportMetric(m["hand"][0]/m["direct"][0], "hand-vs-direct-tput1")
}
