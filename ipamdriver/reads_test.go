package ipamdriver

import (
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// With the daemon's view, a container's address costs etcd its writes and
// one small read (the revision a release catches up to before it looks for
// an endpoint using the address): blocks and handles come from the view,
// and their CAS makes a lagging view harmless.
func TestRequestAndReleaseReadTheView(t *testing.T) {
	st := newStore(t)
	addPool(t, st, "p", "10.9.0.0/24", 26)
	d := New(st, "node00", false)
	v := etcdtest.NewView(t, st)
	d.Allocator().UseView(v)
	cycle := func() {
		t.Helper()
		resp, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: PoolAnyV4})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: PoolAnyV4, Address: resp.Address}); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // claims the block
	etcdtest.CaughtUp(t, st, v)
	before := st.Requests()
	const n = 10
	for i := 0; i < n; i++ {
		cycle()
	}
	after := st.Requests()
	if ranges := after["Range"] - before["Range"]; ranges > n {
		t.Fatalf("%d request/release cycles read etcd %d times (%v, before %v), want at most one each", n, ranges, after, before)
	}
}
