package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// benchPool is the pool the benchmarks claim their blocks in: a node's
// routes are taken only inside an enabled pool, as IPAM grants them.
const benchPool = "10.128.0.0/9"

// addBenchPool stores benchPool (blocks of 64).
func addBenchPool(b *testing.B, st *datastore.Store) {
	b.Helper()
	p := datastore.IPPool{Name: "bench", CIDR: benchPool, BlockSize: 26}
	if err := st.Put(context.Background(), datastore.PoolKey(p.Name), &p); err != nil {
		b.Fatal(err)
	}
}

// claim writes blocks with node's affinity, as the allocator does when the
// host claims them, 50 to a transaction.
func claim(b *testing.B, st *datastore.Store, node string, cidrs ...string) {
	b.Helper()
	for i := 0; i < len(cidrs); i += 50 {
		var ops []datastore.Op
		for _, cidr := range cidrs[i:min(i+50, len(cidrs))] {
			blk := datastore.Block{CIDR: cidr, Pool: "bench", Affinity: node, Allocations: make([]string, 64)}
			ops = append(ops, datastore.Op{Key: datastore.BlockKey(cidr), Value: &blk, Rev: 0},
				datastore.Op{Key: datastore.AffinityKey(node, cidr), Value: &datastore.Affinity{Node: node, Block: cidr}, Rev: datastore.Any})
		}
		if err := st.Commit(context.Background(), ops...); err != nil {
			b.Fatal(err)
		}
	}
}

// noMesh makes opt's lab run without the node-to-node mesh from its first
// daemon on: a large lab's mesh (19,900 sessions at 200 hosts) is what
// route reflectors are for.
func noMesh(b *testing.B, opt *lab.Options) {
	opt.BeforeTabby = func(etcd []string) {
		st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: etcd})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		off := false
		if err := st.Put(context.Background(), datastore.BGPConfigKey(), &datastore.BGPConfiguration{NodeToNodeMeshEnabled: &off}); err != nil {
			b.Fatal(err)
		}
	}
}

// reflectors makes nodes route reflectors of one cluster, which every
// other node then peers with.
func reflectors(b *testing.B, st *datastore.Store, nodes ...string) {
	for _, rr := range nodes {
		err := datastore.Update(context.Background(), st, datastore.NodeKey(rr), func(nd *datastore.Node, _ bool) error {
			nd.RouteReflectorClusterID = "224.0.0.1"
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// waitEverywhere returns how long it took until every host but the first
// had a route to prefix in its kernel.
func waitEverywhere(b *testing.B, dps []*dataplane.Dataplane, prefix netip.Prefix, start time.Time, limit time.Duration) time.Duration {
	b.Helper()
	pending := map[int]bool{}
	for i := range dps {
		pending[i] = true
	}
	for len(pending) > 0 {
		for i := range pending {
			if rs, err := dps[i].ListVia(); err == nil {
				if _, ok := rs[prefix]; ok {
					delete(pending, i)
				}
			}
		}
		if time.Since(start) > limit {
			b.Fatalf("%d hosts still lack %s after %s", len(pending), prefix, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// others returns every dataplane but the claimer's.
func others(dps []*dataplane.Dataplane, skip int) []*dataplane.Dataplane {
	out := append([]*dataplane.Dataplane(nil), dps[:skip]...)
	return append(out, dps[skip+1:]...)
}

// claims is how many blocks are claimed (and timed) per lab.
const claims = 5

// BenchmarkConvergence: time from a block claimed on one host to its route
// in every other host's kernel. Targets: 50-host mesh and 200 hosts with 2
// route reflectors under 1 s (a 200-host mesh, 19,900 sessions, is what
// reflectors are for and is not run).
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{3, 20, 50, 200} {
		for _, topo := range []string{"mesh", "2rr"} {
			if n == 200 && topo == "mesh" {
				continue
			}
			b.Run(fmt.Sprintf("%s-%dhosts", topo, n), func(b *testing.B) {
				opt := lab.Options{Hosts: n, NoDocker: true, Env: []string{"TABBY_LOG_LEVEL=info"}}
				if topo == "2rr" {
					noMesh(b, &opt)
				}
				l := lab.New(b, opt)
				st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				addBenchPool(b, st)
				if topo == "2rr" {
					reflectors(b, st, "node00", "node01")
				}
				var dps []*dataplane.Dataplane
				for _, h := range l.Hosts {
					dp, err := dataplane.New("/run/netns/" + h.NS)
					if err != nil {
						b.Fatal(err)
					}
					defer dp.Close()
					dps = append(dps, dp)
				}
				// Warm up: a claim of every claiming host has reached every other
				// host, so the sessions the measured claims travel are all up.
				for i := 0; i < claims; i++ {
					cidr := fmt.Sprintf("10.250.%d.0/26", i)
					claim(b, st, l.Hosts[i%n].Name, cidr)
					waitEverywhere(b, others(dps, i%n), netip.MustParsePrefix(cidr), time.Now(), 120*time.Second)
				}
				// A fixed number of claims per lab: a lab is too costly to rebuild
				// for every b.N the benchmark framework tries.
				var took []time.Duration
				for i := 0; i < claims; i++ {
					cidr := fmt.Sprintf("10.251.%d.0/26", i)
					start := time.Now()
					claim(b, st, l.Hosts[i%n].Name, cidr)
					took = append(took, waitEverywhere(b, others(dps, i%n), netip.MustParsePrefix(cidr), start, 30*time.Second))
				}
				worst := took[0]
				for _, d := range took {
					worst = max(worst, d)
				}
				b.ReportMetric(float64(median(took).Microseconds())/1000, "median-ms-to-all-hosts")
				b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms(target<1000)")
			})
		}
	}
}
