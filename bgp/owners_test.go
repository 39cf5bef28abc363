package bgp

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

func blockJSON(t *testing.T, b datastore.Block) []byte {
	t.Helper()
	v, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A record that does not hold together grants nothing and blocks no other;
// an address taken in a node's own block marks nobody dirty.
func TestOwnersCheckWhatTheyRead(t *testing.T) {
	o := newOwners(slog.New(slog.NewTextHandler(io.Discard, nil)))
	good := datastore.Block{CIDR: "10.1.0.0/26", Affinity: "a", Allocations: make([]string, 64)}
	o.handle(datastore.Change{Key: datastore.BlockKey(good.CIDR), Value: blockJSON(t, good)})
	for name, c := range map[string]datastore.Change{
		"not JSON":             {Key: datastore.BlockKey("10.2.0.0/26"), Value: []byte("{")},
		"key of another block": {Key: datastore.BlockKey("10.3.0.0/26"), Value: blockJSON(t, datastore.Block{CIDR: "10.1.0.0/26", Affinity: "b", Allocations: make([]string, 64)})},
		"too few slots":        {Key: datastore.BlockKey("10.4.0.0/26"), Value: blockJSON(t, datastore.Block{CIDR: "10.4.0.0/26", Affinity: "b", Allocations: make([]string, 3)})},
		"huge block":           {Key: datastore.BlockKey("10.0.0.0/8"), Value: blockJSON(t, datastore.Block{CIDR: "10.0.0.0/8", Affinity: "b"})},
		"unmasked cidr":        {Key: datastore.BlockKey("10.5.0.1/26"), Value: blockJSON(t, datastore.Block{CIDR: "10.5.0.1/26", Affinity: "b", Allocations: make([]string, 64)})},
		"affinity not a name":  {Key: datastore.BlockKey("10.6.0.0/26"), Value: blockJSON(t, datastore.Block{CIDR: "10.6.0.0/26", Affinity: "b c", Allocations: make([]string, 64)})},
		"handle not JSON":      {Key: datastore.HandleKey("h1"), Value: []byte("[")},
	} {
		o.handle(c)
		if got := o.of("b"); len(got) != 0 {
			t.Errorf("%s: node b was granted %v", name, got)
		}
	}
	if got := o.of("a"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/26")}) {
		t.Fatalf("node a's grants %v, want its block", got)
	}
	o.takeDirty()
	// a takes an address in its own block: no grant changes.
	hv, _ := json.Marshal(datastore.Handle{ID: "h2", Node: "a"})
	o.handle(datastore.Change{Key: datastore.HandleKey("h2"), Value: hv})
	good.Allocations[5] = "h2"
	o.handle(datastore.Change{Key: datastore.BlockKey(good.CIDR), Value: blockJSON(t, good)})
	if d := o.takeDirty(); len(d) != 0 {
		t.Fatalf("an address in a's own block marked %v dirty", d)
	}
	// b borrows .6 of it: b may announce the /32.
	hv, _ = json.Marshal(datastore.Handle{ID: "h3", Node: "b"})
	good.Allocations[6] = "h3"
	o.handle(datastore.Change{Key: datastore.BlockKey(good.CIDR), Value: blockJSON(t, good)})
	o.handle(datastore.Change{Key: datastore.HandleKey("h3"), Value: hv})
	if got := o.of("b"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.1.0.6/32")}) {
		t.Fatalf("node b's grants %v, want 10.1.0.6/32", got)
	}
	o.handle(datastore.Change{Key: datastore.HandleKey("h3"), Deleted: true})
	if got := o.of("b"); len(got) != 0 {
		t.Fatalf("after its handle went, node b keeps %v", got)
	}
}
