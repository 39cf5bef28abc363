package e2e

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkDockerRun compares the median time of `docker run` on a tabby
// network with Docker's default bridge, interleaved in one lab host so both
// see the same machine load. Target: tabby <= 1.05 x bridge. A user-defined
// bridge is measured too: Docker gives every user-defined network (tabby's
// included) its embedded DNS resolver, set up with iptables inside the
// container, and skips it only on the default bridge.
func BenchmarkDockerRun(b *testing.B) {
	l := lab.New(b, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	if out, err := h.Docker("network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "benchnet"); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	if out, err := h.Docker("network", "create", "--driver", "bridge", "userbridge"); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	const runs = 21
	var tabby, bridge, user []time.Duration
	for i := 0; i < b.N; i++ {
		for r := 0; r < runs; r++ {
			for _, c := range []struct {
				net string
				out *[]time.Duration
			}{{"benchnet", &tabby}, {"bridge", &bridge}, {"userbridge", &user}} {
				name := fmt.Sprintf("bench-%s-%d-%d", c.net, i, r)
				start := time.Now()
				if out, err := h.Docker("run", "-d", "--net", c.net, "--name", name, "busybox", "sleep", "600"); err != nil {
					b.Fatalf("%v %s", err, out)
				}
				*c.out = append(*c.out, time.Since(start))
				h.Docker("rm", "-f", name)
			}
		}
	}
	mt, mb, mu := median(tabby), median(bridge), median(user)
	b.ReportMetric(float64(mt.Milliseconds()), "tabby-ms")
	b.ReportMetric(float64(mb.Milliseconds()), "bridge-ms")
	b.ReportMetric(float64(mu.Milliseconds()), "user-bridge-ms")
	b.ReportMetric(float64(mt)/float64(mb), "ratio(target<=1.05)")
	b.ReportMetric(float64(mt)/float64(mu), "ratio-vs-user-bridge")
}
