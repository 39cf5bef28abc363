package driver

import (
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

// WireGuard's header is 60 bytes on an IPv4 underlay and 80 on an IPv6
// one; a node with both peers over IPv4.
func TestWireGuardOverheadFollowsTheUnderlay(t *testing.T) {
	for _, c := range []struct {
		n    datastore.Node
		want int
	}{
		{datastore.Node{IPv4: "10.0.0.1/24"}, 60},
		{datastore.Node{IPv4: "10.0.0.1/24", IPv6: "fd00::1/64"}, 60},
		{datastore.Node{IPv6: "fd00::1/64"}, 80},
	} {
		if got := wgOverhead(c.n); got != c.want {
			t.Errorf("%+v: overhead %d, want %d", c.n, got, c.want)
		}
	}
}
