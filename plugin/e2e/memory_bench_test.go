package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

var vmRE = regexp.MustCompile(`(?m)^(VmHWM|VmRSS):\s+(\d+) kB`)

// memMB returns a process's peak (VmHWM) and current (VmRSS) resident
// memory in MB.
func memMB(b *testing.B, pid int) (peak, now float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range vmRE.FindAllStringSubmatch(string(data), -1) {
		kb, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "VmHWM" {
			peak = kb / 1024
		} else {
			now = kb / 1024
		}
	}
	return peak, now
}

// anonMB returns how much of a process's resident memory is its own
// (anonymous: heap, stacks) rather than pages of its binary, which every
// process running it shares.
func anonMB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Anonymous:\s+(\d+) kB`).FindStringSubmatch(string(data))
	if m == nil {
		b.Fatalf("no Anonymous line in smaps_rollup:\n%s", data)
	}
	kb, _ := strconv.ParseFloat(m[1], 64)
	return kb / 1024
}

// Load of BenchmarkDaemonMemory: routes learned from node01, endpoints of
// other hosts planted in etcd (in every daemon's view).
const (
	memRoutes    = 10000
	memEndpoints = 20000
)

// BenchmarkDaemonMemory: peak resident memory of node00's tabby daemon
// idle (started, one peer), then with 100 local endpoints (containers),
// 20,000 endpoints in the cluster and 10,000 routes learned from node01, in
// one run. Target: under 80 MB loaded. Of the resident figure, the pages
// of tabby's binary (shared with every tabby process, and clean) are shown
// apart from the daemon's own memory.
func BenchmarkDaemonMemory(b *testing.B) {
	l := lab.New(b, lab.Options{Hosts: 2, DNS: true, Env: []string{"TABBY_LOG_LEVEL=info"}})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	if out, err := n0.Docker("network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "memnet"); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	time.Sleep(3 * time.Second) // sessions up, first syncs done
	idlePeak, idleNow := memMB(b, n0.TabbyPID())

	for i := 0; i < 100; i++ {
		if out, err := n0.Docker("run", "-d", "--net", "memnet", "--name", fmt.Sprintf("m%d", i), "busybox", "sleep", "3600"); err != nil {
			b.Fatalf("container %d: %v %s", i, err, out)
		}
	}
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	addBenchPool(b, st)
	claim(b, st, n1.Name, routePrefixes(memRoutes)...)
	plantEndpoints(b, st, memEndpoints)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, _ := n0.Exec("sh", "-c", "ip route show proto 77 | grep -c ' via '")
		if n, _ := strconv.Atoi(out); n >= memRoutes {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("node00 did not install %d learned routes (has %s)", memRoutes, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // a resync period with everything in place
	peak, now := memMB(b, n0.TabbyPID())
	anon := anonMB(b, n0.TabbyPID())
	// Where the memory is: the Go heap in use and the collector's goal
	// (twice the live heap, at GOGC=100), from the daemon's /metrics.
	if out, err := fetch(n0, "http://127.0.0.1:9091/metrics"); err == nil {
		for name, unit := range map[string]string{"go_memstats_heap_inuse_bytes": "heap-inuse-MB", "go_memstats_next_gc_bytes": "heap-goal-MB"} {
			if m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(out); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				b.ReportMetric(v/(1<<20), unit)
			}
		}
	}
	b.ReportMetric(idlePeak, "idle-peak-MB")
	b.ReportMetric(idleNow, "idle-rss-MB")
	b.ReportMetric(peak, "loaded-peak-MB(target<80)")
	b.ReportMetric(now, "loaded-rss-MB")
	b.ReportMetric(anon, "loaded-anon-MB")
	b.ReportMetric(now-anon, "loaded-binary-pages-MB")
	b.ReportMetric(peak/idlePeak, "ratio-loaded-vs-idle")

	// A daemon restarted into the loaded cluster lists it whole and learns
	// every route again at once: its peak is a user's figure too.
	n0.StopTabby()
	n0.StartTabby()
	deadline = time.Now().Add(5 * time.Minute)
	for {
		out, _ := fetch(n0, "http://127.0.0.1:9091/metrics")
		m := regexp.MustCompile(`(?m)^tabby_routes_installed (\S+)$`).FindStringSubmatch(out)
		if m != nil {
			if n, _ := strconv.ParseFloat(m[1], 64); n >= memRoutes {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("restarted node00 did not learn %d routes again: %v", memRoutes, m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	restartPeak, _ := memMB(b, n0.TabbyPID())
	b.ReportMetric(restartPeak, "restarted-peak-MB(target<80)")
}
