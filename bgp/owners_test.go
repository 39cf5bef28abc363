package bgp

import (
	"encoding/json"
	"fmt"
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

// A listing has the blocks before the handles: an address is odd until its
// handle says whose it is; then a borrowed one is granted to its holder and
// one of the block's own node is forgotten, so the owners keep next to
// nothing per address of a large cluster.
func TestOwnersBlocksBeforeTheirHandles(t *testing.T) {
	o := newOwners(slog.New(slog.NewTextHandler(io.Discard, nil)))
	blk := datastore.Block{CIDR: "10.1.0.0/26", Affinity: "a", Allocations: make([]string, 64)}
	for i := range 40 {
		blk.Allocations[i] = fmt.Sprintf("own%d", i)
	}
	blk.Allocations[50] = "lent"
	o.handle(datastore.Change{Key: datastore.BlockKey(blk.CIDR), Value: blockJSON(t, blk)})
	if len(o.byHandle) != 41 {
		t.Fatalf("%d odd handles before any handle is read, want 41", len(o.byHandle))
	}
	put := func(id, node string) {
		hv, _ := json.Marshal(datastore.Handle{ID: id, Node: node, Blocks: map[string]int{blk.CIDR: 1}})
		o.handle(datastore.Change{Key: datastore.HandleKey(id), Value: hv})
	}
	for i := range 40 {
		put(fmt.Sprintf("own%d", i), "a")
	}
	put("lent", "b")
	if got := o.of("b"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.1.0.50/32")}) {
		t.Fatalf("node b's grants %v, want 10.1.0.50/32", got)
	}
	if len(o.byHandle) != 1 || len(o.blocks[datastore.BlockKey(blk.CIDR)].odd) != 1 {
		t.Fatalf("kept %d odd handles and %d odd addresses, want only the borrowed one", len(o.byHandle), len(o.blocks[datastore.BlockKey(blk.CIDR)].odd))
	}
	// Its handle goes and comes back (a restore): the grant follows it.
	o.handle(datastore.Change{Key: datastore.HandleKey("lent"), Deleted: true})
	if got := o.of("b"); len(got) != 0 {
		t.Fatalf("after its handle went, node b keeps %v", got)
	}
	put("lent", "b")
	if got := o.of("b"); len(got) != 1 {
		t.Fatalf("the handle back, node b has %v", got)
	}
	// The block frees it: nothing of it is left.
	blk.Allocations[50] = ""
	o.handle(datastore.Change{Key: datastore.BlockKey(blk.CIDR), Value: blockJSON(t, blk)})
	if got := o.of("b"); len(got) != 0 || len(o.byHandle) != 0 {
		t.Fatalf("after the release node b keeps %v, %d odd handles", got, len(o.byHandle))
	}
	// A handle read before its address is taken: the block's change grants it.
	put("later", "c")
	blk.Allocations[60] = "later"
	o.handle(datastore.Change{Key: datastore.BlockKey(blk.CIDR), Value: blockJSON(t, blk)})
	if got := o.of("c"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.1.0.60/32")}) {
		t.Fatalf("node c's grants %v, want 10.1.0.60/32", got)
	}
	o.handle(datastore.Change{Key: datastore.BlockKey(blk.CIDR), Deleted: true})
	if len(o.of("a")) != 0 || len(o.of("c")) != 0 || len(o.byHandle) != 0 {
		t.Fatalf("after the block went: a %v, c %v, %d odd handles", o.of("a"), o.of("c"), len(o.byHandle))
	}
}
