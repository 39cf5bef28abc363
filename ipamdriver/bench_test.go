package ipamdriver

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

const benchCallers = 16

// runFor runs op from benchCallers goroutines for d and returns ops/s.
func runFor(d time.Duration, op func(worker, i int) error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < benchCallers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if err := op(w, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}(w)
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, e.(error)
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// BenchmarkIPAMvsRawCAS measures, side by side on one etcd, IPAM allocations
// per second from 16 concurrent callers against raw compare-and-swap
// transactions per second from 16 callers (the ceiling). Target: ratio >= 0.5.
func BenchmarkIPAMvsRawCAS(b *testing.B) {
	st := newStore(b)
	ctx := context.Background()
	p := datastore.IPPool{Name: "bench", CIDR: "10.64.0.0/12", BlockSize: 26}
	if err := st.Put(ctx, datastore.PoolKey(p.Name), &p); err != nil {
		b.Fatal(err)
	}
	const d = 3 * time.Second
	var cas, alloc float64
	for i := 0; i < b.N; i++ {
		revs := make([]int64, benchCallers)
		var err error
		cas, err = runFor(d, func(w, i int) error {
			rev, err := st.RawCAS(ctx, fmt.Sprintf("%sbench/cas/%d", datastore.Prefix, w), revs[w], "x")
			revs[w] = rev
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		a := NewAllocator(st, "benchnode")
		alloc, err = runFor(d, func(w, i int) error {
			_, err := a.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("b-%d-%d", w, i))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(cas, "raw-cas/s")
	b.ReportMetric(alloc, "allocs/s")
	b.ReportMetric(alloc/cas, "ratio(target>=0.5)")
}
