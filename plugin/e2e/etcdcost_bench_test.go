package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// etcdCounters are the etcd figures a docker run is charged with.
type etcdCounters struct {
	sent, ranges, txns float64
	// hostRanges and otherRanges are per run, the container's host's own
	// Range calls and the most any other daemon made (idle taken off).
	hostRanges, otherRanges float64
	// hostCPU and othersCPU are the daemons' CPU per run in ms (idle taken
	// off): the container's host's, and every other daemon's together.
	hostCPU, othersCPU float64
}

var grpcHandled = regexp.MustCompile(`(?m)^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$`)

// readEtcd reads etcd's own /metrics: bytes sent to clients, and Range and
// Txn calls completed (whatever their code).
func readEtcd(b *testing.B, l *lab.Lab) etcdCounters {
	b.Helper()
	m, err := l.Etcd.Metrics()
	if err != nil {
		b.Fatal(err)
	}
	var c etcdCounters
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, "etcd_network_client_grpc_sent_bytes_total "); ok {
			c.sent, _ = strconv.ParseFloat(v, 64)
		}
	}
	for _, g := range grpcHandled.FindAllStringSubmatch(m, -1) {
		v, _ := strconv.ParseFloat(g[2], 64)
		switch g[1] {
		case "Range":
			c.ranges += v
		case "Txn", "Put", "DeleteRange":
			c.txns += v
		}
	}
	return c
}

var daemonRanges = regexp.MustCompile(`(?m)^tabby_datastore_requests_total\{method="Range"\} (\S+)$`)

// rangesByHost reads each daemon's own count of its etcd Range calls.
func rangesByHost(l *lab.Lab) []float64 {
	out := make([]float64, len(l.Hosts))
	for i, h := range l.Hosts {
		if m, err := fetch(h, "http://127.0.0.1:9091/metrics"); err == nil {
			if g := daemonRanges.FindStringSubmatch(m); g != nil {
				out[i], _ = strconv.ParseFloat(g[1], 64)
			}
		}
	}
	return out
}

// cpuByHost returns each host's tabby daemon's CPU time so far, in ms.
func cpuByHost(l *lab.Lab) []float64 {
	out := make([]float64, len(l.Hosts))
	for i, h := range l.Hosts {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.TabbyPID()))
		if err != nil {
			continue
		}
		// After "(comm)": state is field 3, utime and stime 14 and 15.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			out[i] = (u + st) * 10 // USER_HZ is 100
		}
	}
	return out
}

func (c etcdCounters) minus(o etcdCounters) etcdCounters {
	return etcdCounters{sent: c.sent - o.sent, ranges: c.ranges - o.ranges, txns: c.txns - o.txns}
}

// cpuIdle returns the machine's idle share over the next second.
func cpuIdle(b *testing.B) float64 {
	b.Helper()
	read := func() (idle, total float64) {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:]
		for i, v := range f {
			n, _ := strconv.ParseFloat(v, 64)
			total += n
			if i == 3 || i == 4 { // idle, iowait
				idle += n
			}
		}
		return idle, total
	}
	i0, t0 := read()
	time.Sleep(time.Second)
	i1, t1 := read()
	return (i1 - i0) / max(t1-t0, 1)
}

// waitQuiet waits atLeast, then until the machine is about as idle as it
// was before (idle, less 0.1), or until atMost, saying so.
func waitQuiet(b *testing.B, idle float64, atLeast, atMost time.Duration) {
	b.Helper()
	time.Sleep(atLeast)
	deadline := time.Now().Add(atMost - atLeast)
	for cpuIdle(b) < idle-0.1 {
		if time.Now().After(deadline) {
			b.Logf("the machine is still busy after %s: timing anyway", atMost)
			return
		}
	}
}

// plantEndpoints writes n valid endpoint records of hosts that do not
// exist, 100 per host, with what IPAM holds for them as a big cluster has
// it: each host's two /26 blocks (10.200+.H.0/24) and affinities, and one
// handle per address.
func plantEndpoints(b *testing.B, st *datastore.Store, n int) {
	b.Helper()
	for g := 0; g*100 < n; g++ {
		node, per := fmt.Sprintf("ghost%03d", g), min(100, n-g*100)
		var eps, handles, ipam []datastore.Op
		var blocks [2]datastore.Block
		for i := range blocks {
			blocks[i] = datastore.Block{CIDR: fmt.Sprintf("10.%d.%d.%d/26", 200+g/256, g%256, i*64), Pool: "ghosts", Affinity: node,
				Allocations: make([]string, 64)}
		}
		for i := 0; i < per; i++ {
			k := g*100 + i
			id, handle := fmt.Sprintf("%032x", k+1), fmt.Sprintf("docker-%016x", k+1)
			e := datastore.WorkloadEndpoint{Node: node, EndpointID: id, NetworkID: fmt.Sprintf("%064x", 7),
				Interface: "cali" + id[:11], IPv4: fmt.Sprintf("10.%d.%d.%d", 200+g/256, g%256, i),
				MAC: "ee:ee:ee:ee:ee:ee", Profiles: []string{"busy"}, Labels: map[string]string{"tabby.network": "busy", "app": "planted"},
				Workload: fmt.Sprintf("planted-%d", k)}
			eps = append(eps, datastore.Op{Key: datastore.EndpointKey(node, id), Value: &e, Rev: datastore.Any})
			blocks[i/64].Allocations[i%64] = handle
			h := datastore.Handle{ID: handle, Node: node, Blocks: map[string]int{blocks[i/64].CIDR: 1}}
			handles = append(handles, datastore.Op{Key: datastore.HandleKey(handle), Value: &h, Rev: datastore.Any})
		}
		for i := range blocks {
			ipam = append(ipam, datastore.Op{Key: datastore.BlockKey(blocks[i].CIDR), Value: &blocks[i], Rev: datastore.Any},
				datastore.Op{Key: datastore.AffinityKey(node, blocks[i].CIDR), Value: &datastore.Affinity{Node: node, Block: blocks[i].CIDR}, Rev: datastore.Any})
		}
		for _, ops := range [][]datastore.Op{ipam, handles, eps} { // etcd takes 128 operations to a transaction
			if err := st.Commit(context.Background(), ops...); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEtcdPerRun: what one `docker run` and its `docker rm` cost etcd,
// cluster-wide, from etcd's own /metrics, with 3, 20, 50 and 200 hosts
// (200 with two route reflectors, no mesh) and with 10 and 20,000
// endpoints in the cluster, side by side. The idle cost of the same time
// (leases, resyncs) is measured after and taken off; at 200 hosts it is
// most of the cluster-wide Range count, which then says little. Targets:
// per host flat in both (each large figure <= 1.2 x its small one), and
// docker run with 20,000 endpoints <= 1.05 x with 10.
func BenchmarkEtcdPerRun(b *testing.B) {
	for _, hosts := range []int{3, 20, 50, 200} {
		b.Run(fmt.Sprintf("%dhosts", hosts), func(b *testing.B) {
			opt := lab.Options{Hosts: hosts, DockerHosts: 1}
			if hosts > 50 {
				noMesh(b, &opt) // two route reflectors, as Calico advises for a cluster this size
			}
			l := lab.New(b, opt)
			h := l.Hosts[0]
			if out, err := h.Docker("network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "busy"); err != nil {
				b.Fatalf("%v %s", err, out)
			}
			st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if hosts > 50 {
				reflectors(b, st, l.Hosts[1].Name, l.Hosts[2].Name)
			}
			plantEndpoints(b, st, 10)
			idle := cpuIdle(b)
			small, smallRun := etcdPerRun(b, l, h, "small")
			plantEndpoints(b, st, 20000)
			// Every daemon takes the planted records in (at 50 hosts, tens of
			// seconds of CPU on this machine's two cores): runs timed during
			// that would measure the intake, not the cluster's size.
			waitQuiet(b, idle, 5*time.Second, max(2*time.Minute, time.Duration(hosts)*3*time.Second))
			large, largeRun := etcdPerRun(b, l, h, "large")
			perHost := func(v float64) float64 { return v / float64(hosts) }
			b.ReportMetric(perHost(small.sent), "bytes/run/host@10")
			b.ReportMetric(perHost(large.sent), "bytes/run/host@20k")
			b.ReportMetric(small.ranges, "ranges/run@10")
			b.ReportMetric(large.ranges, "ranges/run@20k")
			b.ReportMetric(small.txns, "writes/run@10")
			b.ReportMetric(large.sent/max(small.sent, 1), "bytes-ratio(target<=1.2)")
			b.ReportMetric(large.ranges/max(small.ranges, 1), "ranges-ratio(target<=1.2)")
			b.ReportMetric(float64(largeRun)/float64(smallRun), "run-time-ratio(target<=1.05)")
			b.ReportMetric(small.hostRanges, "host-ranges/run@10")
			b.ReportMetric(large.hostRanges, "host-ranges/run@20k")
			b.ReportMetric(large.otherRanges, "other-host-ranges/run@20k")
			b.ReportMetric(large.hostRanges/max(small.hostRanges, 0.1), "host-ranges-ratio(target<=1.2)")
			b.ReportMetric(small.hostCPU, "host-cpu-ms/run@10")
			b.ReportMetric(large.hostCPU, "host-cpu-ms/run@20k")
			b.ReportMetric(small.othersCPU, "others-cpu-ms/run@10")
			b.ReportMetric(large.othersCPU, "others-cpu-ms/run@20k")
		})
	}
}

// etcdPerRun starts and removes containers on h one by one and returns
// the etcd cost of one, idle cost taken off, and the median docker run.
func etcdPerRun(b *testing.B, l *lab.Lab, h *lab.Host, tag string) (etcdCounters, time.Duration) {
	const runs = 10
	settle := 3 * time.Second // the daemons' follow-up writes (container names)
	var took []time.Duration
	start := time.Now()
	before := readEtcd(b, l)
	hostsBefore := rangesByHost(l)
	cpuBefore := cpuByHost(l)
	for i := 0; i < runs; i++ {
		name := fmt.Sprintf("cost-%s-%d", tag, i)
		t0 := time.Now()
		if out, err := h.Docker("run", "-d", "--net", "busy", "--name", name, "busybox", "sleep", "600"); err != nil {
			b.Fatalf("%v %s", err, out)
		}
		took = append(took, time.Since(t0))
		time.Sleep(settle)
		if out, err := h.Docker("rm", "-f", name); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
	time.Sleep(settle)
	busy := readEtcd(b, l).minus(before)
	// Which daemons asked (their own counts, idle included): a figure that
	// grows with the cluster shows here by host.
	var per []string
	for i, n := range rangesByHost(l) {
		if d := n - hostsBefore[i]; d > 0 {
			per = append(per, fmt.Sprintf("%s:%.0f", l.Hosts[i].Name, d))
		}
	}
	b.Logf("%s: Range calls by daemon over %d runs: %s", tag, runs, strings.Join(per, " "))
	hostsBusy := rangesByHost(l)
	cpuBusy := cpuByHost(l)
	window := time.Since(start)
	idleStart := readEtcd(b, l)
	time.Sleep(window)
	idle := readEtcd(b, l).minus(idleStart)
	c := busy.minus(idle)
	// Each daemon's own figure, its idle calls of the same length taken
	// off: the container's host, and the most any other host made.
	hostsIdle := rangesByHost(l)
	own := func(i int) float64 {
		return max(0, (hostsBusy[i]-hostsBefore[i])-(hostsIdle[i]-hostsBusy[i])) / runs
	}
	other := 0.0
	for i := 1; i < len(l.Hosts); i++ {
		other = max(other, own(i))
	}
	cpuAfter := cpuByHost(l)
	cpu := func(i int) float64 { return ((cpuBusy[i] - cpuBefore[i]) - (cpuAfter[i] - cpuBusy[i])) / runs }
	others := 0.0
	for i := 1; i < len(l.Hosts); i++ {
		others += cpu(i)
	}
	return etcdCounters{c.sent / runs, c.ranges / runs, c.txns / runs, own(0), other, cpu(0), others}, median(took)
}
