package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const installRoutes = 10000

// routePrefixes returns n distinct /26 blocks in 10.128.0.0/9.
func routePrefixes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d/26", 128+i/1024, (i/4)%256, (i%4)*64)
	}
	return out
}

// waitLog waits for a line containing s in a daemon's log.
func waitLog(b *testing.B, path, s string, d time.Duration) {
	b.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(path); strings.Contains(string(data), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("%q not in %s after %s", s, path, d)
}

// BenchmarkRouteInstall: node00 owns 10,000 blocks; the time node01 takes
// from its first learned route to the last, against `ip -batch` installing
// the same routes in a fresh namespace, in the same run. Target: tabby's
// rate >= 0.8 x ip -batch.
func BenchmarkRouteInstall(b *testing.B) {
	l := lab.New(b, lab.Options{Hosts: 2, NoDocker: true, Env: []string{"TABBY_LOG_LEVEL=info"}})
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	prefixes := routePrefixes(installRoutes)

	// Baseline: ip -batch in a namespace of its own, with a link to the gateway.
	ns := "tlbatch-" + filepath.Base(l.Dir)[len("tabby-lab-"):]
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"},
		{"-n", ns, "addr", "add", "10.99.0.11/24", "dev", "eth0"}, {"-n", ns, "link", "set", "peer0", "up"}, {"-n", ns, "link", "set", "eth0", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	var batch strings.Builder
	for _, p := range prefixes {
		fmt.Fprintf(&batch, "route replace %s via 10.99.0.10 proto 77\n", p)
	}
	bf := filepath.Join(l.Dir, "routes.batch")
	os.WriteFile(bf, []byte(batch.String()), 0o644)
	start := time.Now()
	if out, err := exec.Command("ip", "-n", ns, "-batch", bf).CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v %s", err, out)
	}
	batchTook := time.Since(start)

	// tabby: node00 claims and advertises the blocks while node01's daemon
	// is down (on one machine node00's work would otherwise steal node01's
	// CPU, which separate hosts do not), then node01 starts and learns and
	// installs the whole table;
	// node01's kernel route events are counted, which costs the installer
	// nothing (dumping 10,000 routes to poll would).
	nsh, err := netns.GetFromPath("/run/netns/" + l.Hosts[1].NS)
	if err != nil {
		b.Fatal(err)
	}
	defer nsh.Close()
	events := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	defer close(done)
	subErr := make(chan error, 1)
	err = netlink.RouteSubscribeWithOptions(events, done, netlink.RouteSubscribeOptions{
		Namespace: &nsh, ReceiveBufferSize: 256 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	l.Hosts[1].StopTabby()
	addBenchPool(b, st)
	claim(b, st, "node00", prefixes...)
	waitLog(b, filepath.Join(l.Hosts[0].Dir, "tabby.log"), fmt.Sprintf("total=%d", installRoutes), 2*time.Minute)
	l.Hosts[1].StartTabby()
	// Route events are timed with a socket buffer large enough not to drop
	// any; a lost event fails the benchmark rather than skew it.
	dp, err := dataplane.New("/run/netns/" + l.Hosts[1].NS)
	if err != nil {
		b.Fatal(err)
	}
	defer dp.Close()
	var first, last time.Time
	seen := map[string]bool{}
	timeout := time.After(5 * time.Minute)
	for len(seen) < installRoutes {
		select {
		case u, ok := <-events:
			if !ok {
				b.Fatal("route event subscription closed early")
			}
			if u.Type == unix.RTM_NEWROUTE && u.Protocol == dataplane.RouteProtocol && u.Gw != nil && u.Dst != nil {
				if first.IsZero() {
					first = time.Now()
				}
				last = time.Now()
				seen[u.Dst.String()] = true
			}
		case <-time.After(time.Second):
			if rs, err := dp.ListVia(); err == nil && len(rs) >= installRoutes {
				b.Fatalf("all %d routes are in but only %d route events arrived: events were lost", len(rs), len(seen))
			}
		case err := <-subErr:
			b.Fatalf("route event subscription failed, so the timing would be wrong: %v", err)
		case <-timeout:
			b.Fatalf("node01 installed %d of %d routes in 5 minutes", len(seen), installRoutes)
		}
	}
	tabbyTook := last.Sub(first)
	b.ReportMetric(float64(installRoutes)/tabbyTook.Seconds(), "tabby-routes/s")
	b.ReportMetric(float64(installRoutes)/batchTook.Seconds(), "ip-batch-routes/s")
	b.ReportMetric(batchTook.Seconds()/tabbyTook.Seconds(), "ratio(target>=0.8)")
}
