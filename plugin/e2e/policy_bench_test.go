package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// dialFrom opens a TCP connection from inside the network namespace at
// nsPath (a container's).
func dialFrom(nsPath, addr string, timeout time.Duration) error {
	return inNetns(nsPath, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// BenchmarkPolicy: (1) the time from `tabby apply` of a policy to the first
// connection it allows, to containers on both other hosts of a 3-host lab
// (target < 1 s); (2) TCP throughput between two containers with 1,000
// rules in force against none, interleaved in one run (target >= 0.95).
func BenchmarkPolicy(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3 (apt-get install iperf3): " + err.Error())
	}
	l := lab.New(b, lab.Options{Hosts: 3})
	mustB := func(h *lab.Host, args ...string) string {
		out, err := h.Docker(args...)
		if err != nil {
			b.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		return out
	}
	for _, n := range []string{"net1", "net2"} {
		mustB(l.Hosts[0], "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", n)
	}
	ctr := func(h *lab.Host, name, network string) (string, string) {
		for i := 0; i < 100; i++ { // the mirrored network may not be there yet
			if out, _ := h.Docker("network", "ls", "--format", "{{.Name}}"); strings.Contains(out, network) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		mustB(h, "run", "--net", network, "--name", name, "-tid", "busybox")
		pid := mustB(h, "inspect", "-f", "{{.State.Pid}}", name)
		ip := mustB(h, "inspect", "-f", fmt.Sprintf("{{(index .NetworkSettings.Networks %q).IPAddress}}", network), name)
		return "/proc/" + pid + "/ns/net", ip
	}
	client, _ := ctr(l.Hosts[0], "client", "net2")
	var servers []string
	for _, h := range l.Hosts[1:] {
		srvNS, ip := ctr(h, "srv-"+h.Name, "net1")
		srv := exec.Command("nsenter", "--net="+srvNS, "iperf3", "-s", "-p", "8080")
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { srv.Process.Kill(); srv.Wait() }()
		servers = append(servers, net.JoinHostPort(ip, "8080"))
	}
	pol := "apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: open}\nspec:\n  selector: tabby.network == 'net1'\n" +
		"  ingress:\n  - action: Allow\n    protocol: TCP\n    source: {selector: tabby.network == 'net2'}\n    destination: {ports: [8080]}\n"
	polFile := writeFile(b, l, "open.yaml", pol)
	var took []time.Duration
	for i := 0; i < b.N; i++ {
		for r := 0; r < 5; r++ {
			for _, s := range servers {
				if dialFrom(client, s, 300*time.Millisecond) == nil {
					b.Fatalf("%s is open before the policy", s)
				}
			}
			start := time.Now()
			if out, err := l.Hosts[0].Tabby("apply", "-f", polFile); err != nil {
				b.Fatalf("apply: %v %s", err, out)
			}
			for _, s := range servers {
				for dialFrom(client, s, 20*time.Millisecond) != nil {
					if time.Since(start) > 30*time.Second {
						b.Fatalf("policy not enforced towards %s after 30 s", s)
					}
				}
			}
			took = append(took, time.Since(start))
			if out, err := l.Hosts[0].Tabby("delete", "networkpolicy", "open"); err != nil {
				b.Fatalf("delete: %v %s", err, out)
			}
			time.Sleep(time.Second) // let the delete reach every host
		}
	}
	b.ReportMetric(float64(median(took).Milliseconds()), "apply-to-enforced-ms(target<1000)")

	// Throughput: client and server on net1 across hosts, with no policy
	// and with 1,000 rules that do not match ahead of the one that does.
	peerNS, peerIP := ctr(l.Hosts[1], "tput-srv", "net1")
	cliNS, _ := ctr(l.Hosts[0], "tput-cli", "net1")
	srv := exec.Command("nsenter", "--net="+peerNS, "iperf3", "-s")
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var many strings.Builder
	many.WriteString("apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: many}\nspec:\n  selector: tabby.network == 'net1'\n  ingress:\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&many, "  - {action: Allow, protocol: TCP, source: {nets: [10.%d.%d.0/24]}, destination: {ports: [%d]}}\n", 200+i/256, i%256, 10000+i)
	}
	manyFile := writeFile(b, l, "many.yaml", many.String())
	path := &netPath{name: "net1", client: cliNS, server: peerNS, addr: peerIP}
	var none, with []float64
	for r := 0; r < 4; r++ {
		none = append(none, iperfGbps(b, path, 1))
		if out, err := l.Hosts[0].Tabby("apply", "-f", manyFile); err != nil {
			b.Fatalf("apply: %v %s", err, out)
		}
		waitRules(b, l.Hosts[1], 1000)
		with = append(with, iperfGbps(b, path, 1))
		if out, err := l.Hosts[0].Tabby("delete", "networkpolicy", "many"); err != nil {
			b.Fatalf("delete: %v %s", err, out)
		}
		waitRules(b, l.Hosts[1], 0)
	}
	b.ReportMetric(medianF(none), "Gbps-no-rules")
	b.ReportMetric(medianF(with), "Gbps-1000-rules")
	b.ReportMetric(medianF(with)/medianF(none), "ratio(target>=0.95)")
}

// waitRules waits until the host's policy table holds about n port rules.
func waitRules(b *testing.B, h *lab.Host, n int) {
	for i := 0; i < 300; i++ {
		out, _ := h.Exec("nft", "list", "table", "inet", "tabby")
		// nft lists `th dport { 10000 }` after `meta l4proto tcp` as `tcp dport 10000`.
		if strings.Count(out, "dport") >= n && (n > 0 || !strings.Contains(out, "dport 10")) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("%s never reached %d policy rules", h.Name, n)
}
