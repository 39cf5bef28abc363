package e2e

import (
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tcpRTTms is the mean round trip of 1-byte exchanges with an echo server
// at addr, from the namespace at ns, over one connection.
func tcpRTTms(b *testing.B, ns, addr string, n int) float64 {
	var c net.Conn
	var err error
	for try := 0; try < 20; try++ {
		if err = inNetns(ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, 2*time.Second); return err }); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("connect %s: %v", addr, err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	buf := []byte{0}
	start := time.Now()
	for i := 0; i < n; i++ {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(buf); err != nil {
			b.Fatalf("echo %s: %v", addr, err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatalf("echo %s: %v", addr, err)
		}
	}
	return float64(time.Since(start).Microseconds()) / 1000 / float64(n)
}

// BenchmarkPublishedPort: TCP throughput (iperf3) and request/response
// round trip from a container on another host to a container, through its published
// port on its host's address (DNAT) against its own address (routed), in
// one run, rounds interleaved. Targets: published >= 0.95 x throughput,
// <= 1.1 x round trip.
func BenchmarkPublishedPort(b *testing.B) {
	l, mustB := benchLab(b, 2)
	n0, n1 := l.Hosts[0], l.Hosts[1]
	mustB(n1, "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "net1")
	mustB(n1, "run", "-d", "--net", "net1", "--name", "srv", "-p", "5201:5201", "-p", "7000:7000", "busybox", "sleep", "3600")
	pid := mustB(n1, "inspect", "-f", "{{.State.Pid}}", "srv")
	ip := mustB(n1, "inspect", "-f", "{{.NetworkSettings.Networks.net1.IPAddress}}", "srv")
	iperf := exec.Command("nsenter", "--net=/proc/"+pid+"/ns/net", "iperf3", "-s")
	if err := iperf.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { iperf.Process.Kill(); iperf.Wait() }()
	// The client is a container of the network on the other host: its own
	// address is reachable by it (the profile admits the network's
	// endpoints), the published port by anyone.
	for i := 0; i < 100; i++ {
		if out, _ := n0.Docker("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, "net1") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustB(n0, "run", "--net", "net1", "--name", "cli", "-tid", "busybox")
	client := "/proc/" + mustB(n0, "inspect", "-f", "{{.State.Pid}}", "cli") + "/ns/net"
	// One echo server (this process's) in the container, and the same on
	// the other host itself: what reaching a host address costs without
	// DNAT.
	for _, ns := range []string{"/proc/" + pid + "/ns/net", "/run/netns/" + n1.NS} {
		port := "7000"
		if ns != "/proc/"+pid+"/ns/net" {
			port = "7001"
		}
		serveIn(b, ns, ":"+port, func(c net.Conn) { defer c.Close(); c.(*net.TCPConn).SetNoDelay(true); io.Copy(c, c) })
	}
	paths := []*netPath{
		{name: "container", client: client, addr: ip},
		{name: "published", client: client, addr: n1.Addr},
	}
	for _, p := range paths { // warm up: routes, ARP, the DNAT rule
		tcpRTTms(b, p.client, net.JoinHostPort(p.addr, "7000"), 10)
	}
	const rounds = 5
	var hostRTT []float64
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for _, p := range paths {
				p.tput1 = append(p.tput1, iperfGbps(b, p, 1))
				p.rtt = append(p.rtt, tcpRTTms(b, p.client, net.JoinHostPort(p.addr, "7000"), 2000))
			}
			hostRTT = append(hostRTT, tcpRTTms(b, client, net.JoinHostPort(n1.Addr, "7001"), 2000))
		}
	}
	m := map[string][2]float64{}
	for _, p := range paths {
		m[p.name] = [2]float64{medianF(p.tput1), medianF(p.rtt)}
		b.ReportMetric(m[p.name][0], p.name+"-Gbps")
		b.ReportMetric(m[p.name][1]*1000, p.name+"-rtt-us")
	}
	b.ReportMetric(m["published"][0]/m["container"][0], "published-tput-vs-container(target>=0.95)")
	b.ReportMetric(m["published"][1]/m["container"][1], "published-rtt-vs-container(target<=1.1)")
	b.ReportMetric(medianF(hostRTT)*1000, "host-echo-rtt-us")
}
