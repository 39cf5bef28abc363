package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/datastore"
)

// Tunnel address handles: <kind>-tunnel-addr-<node>.
var tunnelHandlePrefixes = []string{"vxlan-tunnel-addr-", "ipip-tunnel-addr-", "wireguard-tunnel-addr-"}

// Finding is one inconsistency `tabby ipam check` reports.
type Finding struct {
	Kind   string // leaked, unassigned, duplicate, orphan-tunnel
	IP     string
	Handle string // the assigning handle, for leaked and orphan-tunnel
	Detail string
}

func (f Finding) String() string { return fmt.Sprintf("%-13s %-26s %s", f.Kind, f.IP, f.Detail) }

// State is what the IPAM checks read from etcd.
type State struct {
	Blocks    []datastore.Block
	Endpoints []datastore.WorkloadEndpoint
	Nodes     []datastore.Node
	Networks  []datastore.Network
}

// ReadState reads the blocks first: an address assigned after that is not
// judged, and one whose endpoint is being created is covered by the
// endpoints read after it. Unchecked: an address that a record the daemon
// would skip names is still held, never collected.
func ReadState(ctx context.Context, st *datastore.Store) (State, error) {
	var s State
	var err error
	if s.Blocks, err = datastore.ListAsUnchecked[datastore.Block](ctx, st, datastore.BlocksDir); err != nil {
		return s, err
	}
	if s.Endpoints, err = datastore.ListAsUnchecked[datastore.WorkloadEndpoint](ctx, st, datastore.EndpointsDir); err != nil {
		return s, err
	}
	if s.Networks, err = datastore.ListAsUnchecked[datastore.Network](ctx, st, datastore.NetworksDir); err != nil {
		return s, err
	}
	s.Nodes, err = datastore.ListAsUnchecked[datastore.Node](ctx, st, datastore.NodesDir)
	return s, err
}

// NodeStateFrom is what one node's collector judges, from the view: only
// the addresses its own Docker handles hold (the handles' records name the
// node and their blocks), its own endpoints, and every network and node. A
// sweep then costs the node's share of the cluster, not the cluster. Read
// in ReadState's order: handles, blocks, then endpoints, so an address
// assigned during the read is not judged.
func NodeStateFrom(ctx context.Context, v *datastore.View, node string) (State, error) {
	var s State
	mine := datastore.HandleOf(node)
	own := map[string]bool{}
	blocks := map[string]bool{}
	for _, kv := range v.List(datastore.HandlesDir) {
		// Most handles are other nodes': skip them without decoding.
		if !strings.HasPrefix(kv.Key, datastore.HandleKey(dockerHandlePrefix)) || !mine(kv.Value) {
			continue
		}
		var h datastore.Handle
		if jsonDecode(kv.Value, &h) != nil || h.Node != node {
			continue // unreadable: its addresses are kept, never collected
		}
		own[h.ID] = true
		for cidr := range h.Blocks {
			blocks[cidr] = true
		}
	}
	for _, cidr := range slices.Sorted(maps.Keys(blocks)) {
		kv, err := v.Fetch(ctx, datastore.BlockKey(cidr)) // a borrowed address's block is another host's
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		} else if err != nil {
			return s, err
		}
		var b datastore.Block
		if err := jsonDecode(kv.Value, &b); err != nil {
			return s, fmt.Errorf("decode %s: %w: %v", kv.Key, datastore.ErrInvalid, err)
		}
		for i, h := range b.Allocations {
			if !own[h] {
				b.Allocations[i] = "" // another's: not this node's to judge
			}
		}
		s.Blocks = append(s.Blocks, b)
	}
	var err error
	if s.Endpoints, err = datastore.ViewListUnchecked[datastore.WorkloadEndpoint](v, datastore.EndpointsOf(node)); err != nil {
		return s, err
	}
	if s.Networks, err = datastore.ViewListUnchecked[datastore.Network](v, datastore.NetworksDir); err != nil {
		return s, err
	}
	s.Nodes, err = datastore.ViewListUnchecked[datastore.Node](v, datastore.NodesDir)
	return s, err
}

// Check compares the addresses assigned in the blocks with the endpoints,
// networks and nodes that should hold them. Pure, so it is tested without
// etcd.
// - leaked: assigned, but no endpoint, network (--aux-address) or node's
// tunnel uses it;
// - unassigned: an endpoint's address that no block assigns;
// - duplicate: an address two endpoints claim;
// - orphan-tunnel: a tunnel address of a node that no longer exists.
func Check(s State) []Finding {
	assigned := map[netip.Addr]string{} // address -> handle
	for _, sb := range s.Blocks {
		b, err := wrapBlock(&sb)
		if err != nil {
			continue
		}
		for a, h := range b.inUse() {
			assigned[a] = h
		}
	}
	users := map[netip.Addr][]string{}
	for _, e := range s.Endpoints {
		for _, a := range e.Addrs() {
			users[a] = append(users[a], e.Node+"/"+e.EndpointID)
		}
	}
	reserved := map[netip.Addr]bool{}
	for _, n := range s.Networks {
		for _, x := range n.AuxAddresses {
			if a, err := netip.ParseAddr(x); err == nil {
				reserved[a] = true
			}
		}
	}
	known := map[string]bool{}
	for _, n := range s.Nodes {
		known[n.Name] = true
	}
	var out []Finding
	for a, h := range assigned {
		if len(users[a]) > 0 || reserved[a] {
			continue
		}
		if node, ok := tunnelNode(h); ok {
			if !known[node] {
				out = append(out, Finding{"orphan-tunnel", a.String(), h, "tunnel address of node " + node + ", which is gone"})
			}
			continue
		}
		out = append(out, Finding{"leaked", a.String(), h, "assigned (handle " + h + ") but no endpoint uses it"})
	}
	for a, us := range users {
		if _, ok := assigned[a]; !ok {
			out = append(out, Finding{"unassigned", a.String(), "", "endpoint " + strings.Join(us, ", ") + " has it, no block assigns it"})
		}
		if len(us) > 1 {
			out = append(out, Finding{"duplicate", a.String(), "", "endpoints " + strings.Join(us, ", ") + " share it"})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].IP < out[j].IP
	})
	return out
}

func tunnelNode(handle string) (string, bool) {
	for _, p := range tunnelHandlePrefixes {
		if n, ok := strings.CutPrefix(handle, p); ok {
			return n, true
		}
	}
	return "", false
}

// BlockUsage is one row of `tabby ipam show`.
type BlockUsage struct {
	CIDR, Pool, Affinity string
	InUse, Size          int
}

// Usage summarises blocks for `tabby ipam show`, sorted by CIDR.
func Usage(blocks []datastore.Block) []BlockUsage {
	var out []BlockUsage
	for _, sb := range blocks {
		b, err := wrapBlock(&sb)
		if err != nil {
			continue
		}
		out = append(out, BlockUsage{CIDR: b.CIDR, Pool: b.Pool, Affinity: b.Affinity, InUse: len(b.inUse()), Size: len(b.Allocations)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR < out[j].CIDR })
	return out
}

// HandleOf returns the handle that holds addr in blocks ("" when free).
func HandleOf(blocks []datastore.Block, addr netip.Addr) (string, string) {
	for _, sb := range blocks {
		b, err := wrapBlock(&sb)
		if err != nil {
			continue
		}
		if i, ok := b.ordinal(addr); ok {
			return b.CIDR, b.Allocations[i]
		}
	}
	return "", ""
}
