package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/policy"
	"github.com/tabbynet/tabby/ipamdriver"
	"github.com/tabbynet/tabby/plugin"
	"sigs.k8s.io/yaml"
)

// APIVersion is the apiVersion of every resource document.
const APIVersion = "tabby/v1"

// document is one resource as users write it.
type document struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

type metadata struct {
	Name string `json:"name"`
}

// poolSpec is IPPool's spec as written (the name lives in metadata).
type poolSpec struct {
	CIDR        string `json:"cidr"`
	BlockSize   int    `json:"blockSize,omitempty"`
	IPIPMode    string `json:"ipipMode,omitempty"`
	VXLANMode   string `json:"vxlanMode,omitempty"`
	NATOutgoing *bool  `json:"natOutgoing,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
}

// parseDocuments splits a YAML (or JSON) stream into resource documents.
func parseDocuments(data []byte) ([]document, error) {
	var docs []document
	for i, part := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(part)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(part)
		if err != nil {
			return nil, fmt.Errorf("document %d: not valid YAML: %w", i+1, err)
		}
		var d document
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if d.APIVersion != APIVersion {
			return nil, fmt.Errorf("document %d: apiVersion %q must be %s", i+1, d.APIVersion, APIVersion)
		}
		if d.Metadata.Name == "" {
			return nil, fmt.Errorf("document %d (%s): metadata.name is required", i+1, d.Kind)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, errors.New("no resources in input")
	}
	return docs, nil
}

func decodeSpec(d document, v any) error {
	dec := json.NewDecoder(bytes.NewReader(d.Spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s %s: spec: %w", d.Kind, d.Metadata.Name, err)
	}
	return nil
}

// apply creates or updates each document's resource.
func apply(ctx context.Context, st *datastore.Store, docs []document, out io.Writer) error {
	for _, d := range docs {
		switch d.Kind {
		case "IPPool":
			var s poolSpec
			if err := decodeSpec(d, &s); err != nil {
				return err
			}
			p := datastore.IPPool{Name: d.Metadata.Name, CIDR: s.CIDR, BlockSize: s.BlockSize,
				IPIPMode: s.IPIPMode, VXLANMode: s.VXLANMode, NATOutgoing: s.NATOutgoing == nil || *s.NATOutgoing, Disabled: s.Disabled}
			if err := applyPool(ctx, st, &p); err != nil {
				return err
			}
		case "BGPPeer":
			if err := applyBGPPeer(ctx, st, d); err != nil {
				return err
			}
		case "BGPFilter":
			var f datastore.BGPFilter
			if err := decodeSpec(d, &f); err != nil {
				return err
			}
			f.Name = d.Metadata.Name
			if err := bgp.ValidateFilter(f); err != nil {
				return err
			}
			if err := st.Put(ctx, datastore.BGPFilterKey(f.Name), &f); err != nil {
				return err
			}
		case "BGPConfiguration":
			if d.Metadata.Name != "default" {
				return fmt.Errorf("BGPConfiguration %s: metadata.name must be default", d.Metadata.Name)
			}
			var c datastore.BGPConfiguration
			if err := decodeSpec(d, &c); err != nil {
				return err
			}
			if err := st.Put(ctx, datastore.BGPConfigKey(), &c); err != nil {
				return err
			}
		case "FelixConfiguration":
			if err := applyFelixConfig(ctx, st, d); err != nil {
				return err
			}
		case "Node":
			if err := applyNode(ctx, st, d); err != nil {
				return err
			}
		case "Profile":
			if err := applyProfile(ctx, st, d); err != nil {
				return err
			}
		case "NetworkPolicy":
			p := datastore.NetworkPolicy{Name: d.Metadata.Name}
			if err := decodeSpec(d, &p); err != nil {
				return err
			}
			p.Name = d.Metadata.Name
			if err := policy.Validate(p); err != nil {
				return err
			}
			if err := st.Put(ctx, datastore.PolicyKey(p.Name), &p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("kind %q cannot be applied: use IPPool, BGPPeer, BGPFilter, BGPConfiguration, FelixConfiguration, Node, Profile or NetworkPolicy", d.Kind)
		}
		fmt.Fprintf(out, "%s %s applied\n", d.Kind, d.Metadata.Name)
	}
	return nil
}

// applyFelixConfig stores the cluster's (default) or one node's (node.NAME)
// dataplane settings. Turning WireGuard on is refused where this host's
// kernel has no wireguard module, naming it; other hosts without it report
// it in their log and tabby node status, and keep sending in clear.
func applyFelixConfig(ctx context.Context, st *datastore.Store, d document) error {
	var c datastore.FelixConfiguration
	if err := decodeSpec(d, &c); err != nil {
		return err
	}
	c.Name = d.Metadata.Name
	if err := c.Check(""); err != nil {
		return err
	}
	if c.WireguardEnabled != nil && *c.WireguardEnabled {
		if err := plugin.WireGuardSupported(); err != nil {
			return fmt.Errorf("FelixConfiguration %s: spec.wireguardEnabled: %w", c.Name, err)
		}
	}
	return st.Put(ctx, datastore.FelixConfigKey(c.Name), &c)
}

// applyProfile replaces a profile's labels and rules, keeping the network
// it belongs to.
func applyProfile(ctx context.Context, st *datastore.Store, d document) error {
	var sp struct {
		Labels  map[string]string `json:"labels,omitempty"`
		Ingress []datastore.Rule  `json:"ingress"`
		Egress  []datastore.Rule  `json:"egress"`
		Network string            `json:"networkID,omitempty"`
	}
	if err := decodeSpec(d, &sp); err != nil {
		return err
	}
	if err := policy.ValidateRules("Profile "+d.Metadata.Name, sp.Ingress, sp.Egress); err != nil {
		return err
	}
	return datastore.Update(ctx, st, datastore.ProfileKey(d.Metadata.Name), func(p *datastore.Profile, _ bool) error {
		p.Name, p.Labels, p.Ingress, p.Egress = d.Metadata.Name, sp.Labels, sp.Ingress, sp.Egress
		if sp.Network != "" {
			p.Network = sp.Network
		}
		return nil
	})
}

// applyPool validates a pool and refuses overlaps with other pools and
// CIDR or block-size changes while its blocks exist.
func applyPool(ctx context.Context, st *datastore.Store, p *datastore.IPPool) error {
	if err := ipamdriver.ValidatePool(p); err != nil {
		return err
	}
	if p.IPIPMode != datastore.ModeNever {
		if err := plugin.IPIPSupported(); err != nil {
			return fmt.Errorf("IPPool %s: spec.ipipMode %s: %w", p.Name, p.IPIPMode, err)
		}
	}
	// The overlap check and the write are one transaction on the pools'
	// version: of two writers of overlapping pools, one retries and sees
	// the other's.
	for i := 0; i < datastore.MaxRetries; i++ {
		ver, verRev, err := datastore.PoolsVersion(ctx, st)
		if err != nil {
			return err
		}
		if err := checkPoolFits(ctx, st, p); err != nil {
			return err
		}
		err = st.Commit(ctx, datastore.PoolWrite(p.Name, p, ver, verRev, datastore.Any)...)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("IPPool %s: %w", p.Name, datastore.ErrConflict)
}

// checkPoolFits refuses a pool that overlaps another, or that changes its
// geometry while it has blocks.
func checkPoolFits(ctx context.Context, st *datastore.Store, p *datastore.IPPool) error {
	pools, err := datastore.ListAs[datastore.IPPool](ctx, st, datastore.PoolsDir)
	if err != nil {
		return err
	}
	np := netip.MustParsePrefix(p.CIDR)
	for _, o := range pools {
		op, err := netip.ParsePrefix(o.CIDR)
		if err != nil {
			continue
		}
		if o.Name == p.Name {
			// Even an empty block counts: blocks of another size or place
			// would overlap it, and two blocks could hand out one address.
			if (o.CIDR != p.CIDR || o.BlockSize != p.BlockSize) && poolHasBlocks(ctx, st, op) {
				return fmt.Errorf("IPPool %s: spec.cidr and spec.blockSize cannot change while the pool has blocks (%s, /%d): "+
					"create a new pool and move containers to it instead", p.Name, o.CIDR, o.BlockSize)
			}
			continue
		}
		if op.Overlaps(np) {
			return fmt.Errorf("IPPool %s: spec.cidr %s overlaps IPPool %s (%s); pick a CIDR that does not", p.Name, p.CIDR, o.Name, o.CIDR)
		}
	}
	return nil
}

// poolHasBlocks reports whether any block lies in pool (true when etcd
// cannot tell).
func poolHasBlocks(ctx context.Context, st *datastore.Store, pool netip.Prefix) bool {
	keys, err := st.ListKeys(ctx, datastore.BlocksDir)
	if err != nil {
		return true
	}
	for _, k := range keys {
		if bp, err := netip.ParsePrefix(datastore.KeyToCIDR(k[strings.LastIndex(k, "/")+1:])); err == nil && pool.Overlaps(bp) {
			return true
		}
	}
	return false
}

func poolInUse(ctx context.Context, st *datastore.Store, pool netip.Prefix) bool {
	blocks, err := datastore.ListAs[datastore.Block](ctx, st, datastore.BlocksDir)
	if err != nil {
		return true
	}
	for _, b := range blocks {
		if bp, err := netip.ParsePrefix(b.CIDR); err == nil && pool.Overlaps(bp) {
			for _, h := range b.Allocations {
				if h != "" {
					return true
				}
			}
		}
	}
	return false
}

// kind describes one resource kind for get and delete.
type kind struct {
	name, dir string
	columns   []string
	row       func(json.RawMessage) ([]string, string, error) // cells, name
}

func field(m map[string]any, k string) string {
	if v, ok := m[k]; ok && v != nil {
		return fmt.Sprint(v)
	}
	return ""
}

func rowOf(cols ...string) func(json.RawMessage) ([]string, string, error) {
	return func(raw json.RawMessage) ([]string, string, error) {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, "", err
		}
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = field(m, c)
		}
		return cells, cells[0], nil
	}
}

// endpointRow is rowOf for endpoints, with their published ports as
// `docker ps` writes them (Docker shows a plugin's ports nowhere).
func endpointRow(raw json.RawMessage) ([]string, string, error) {
	cells, name, err := rowOf("endpointID", "node", "interfaceName", "ipv4", "networkID")(raw)
	if err != nil {
		return nil, "", err
	}
	var e datastore.WorkloadEndpoint
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, "", err
	}
	var ps []string
	for _, p := range e.Ports {
		host := p.HostIP
		if host == "" {
			host = "*"
		}
		ps = append(ps, fmt.Sprintf("%s->%d/%s", net.JoinHostPort(host, strconv.Itoa(int(p.HostPort))), p.Port, p.Proto))
	}
	return append(cells, strings.Join(ps, ",")), name, nil
}

var kinds = map[string]kind{
	"IPPool":             {"IPPool", datastore.PoolsDir, []string{"NAME", "CIDR", "BLOCKSIZE", "IPIP", "VXLAN", "NAT"}, rowOf("name", "cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing")},
	"Node":               {"Node", datastore.NodesDir, []string{"NAME", "IPV4", "IPV6", "ASN", "RR-CLUSTER"}, rowOf("name", "ipv4Address", "ipv6Address", "asNumber", "routeReflectorClusterID")},
	"BGPPeer":            {"BGPPeer", datastore.BGPPeersDir, []string{"NAME", "PEERIP", "ASN", "NODE"}, rowOf("name", "peerIP", "asNumber", "node")},
	"BGPFilter":          {"BGPFilter", datastore.BGPFiltersDir, []string{"NAME"}, rowOf("name")},
	"BGPConfiguration":   {"BGPConfiguration", datastore.BGPConfigDir, []string{"ASN", "MESH"}, rowOf("asNumber", "nodeToNodeMeshEnabled")},
	"FelixConfiguration": {"FelixConfiguration", datastore.FelixConfigDir, []string{"NAME", "WIREGUARD"}, rowOf("name", "wireguardEnabled")},
	"Network":            {"Network", datastore.NetworksDir, []string{"NAME", "ID", "SUBNET", "PROFILE"}, rowOf("name", "id", "subnet", "profile")},
	"Profile":            {"Profile", datastore.ProfilesDir, []string{"NAME", "NETWORK"}, rowOf("name", "networkID")},
	"NetworkPolicy":      {"NetworkPolicy", datastore.PoliciesDir, []string{"NAME", "ORDER", "SELECTOR"}, rowOf("name", "order", "selector")},
	"WorkloadEndpoint":   {"WorkloadEndpoint", datastore.EndpointsDir, []string{"ENDPOINT", "NODE", "INTERFACE", "IPV4", "NETWORK", "PORTS"}, endpointRow},
}

// hidePassword replaces a record's "password" by "passwordSet": true, so
// that no output of the CLI carries a BGP session's MD5 secret.
func hidePassword(raw json.RawMessage) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	pw, ok := m["password"]
	if !ok {
		return raw
	}
	delete(m, "password")
	if s, _ := pw.(string); s != "" {
		m["passwordSet"] = true
	}
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}

// kindOf maps what users type (nodes, ippool, wep...) to a kind.
func kindOf(s string) (kind, error) {
	alias := map[string]string{
		"ippool": "IPPool", "ippools": "IPPool", "pool": "IPPool", "pools": "IPPool",
		"node": "Node", "nodes": "Node", "network": "Network", "networks": "Network",
		"profile": "Profile", "profiles": "Profile",
		"workloadendpoint": "WorkloadEndpoint", "workloadendpoints": "WorkloadEndpoint", "wep": "WorkloadEndpoint",
		"bgppeer": "BGPPeer", "bgppeers": "BGPPeer", "bgpfilter": "BGPFilter", "bgpfilters": "BGPFilter", "bgpconfig": "BGPConfiguration", "bgpconfigs": "BGPConfiguration",
		"bgpconfiguration": "BGPConfiguration", "bgpconfigurations": "BGPConfiguration",
		"felixconfig": "FelixConfiguration", "felixconfigs": "FelixConfiguration", "felixconfiguration": "FelixConfiguration", "felixconfigurations": "FelixConfiguration",
		"networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy", "policy": "NetworkPolicy", "policies": "NetworkPolicy",
	}
	if k, ok := kinds[alias[strings.ToLower(s)]]; ok {
		return k, nil
	}
	names := make([]string, 0, len(alias))
	for a := range alias {
		if strings.HasSuffix(a, "s") {
			names = append(names, a)
		}
	}
	sort.Strings(names)
	return kind{}, fmt.Errorf("unknown resource kind %q: use one of %s", s, strings.Join(names, ", "))
}

// get prints the resources of a kind (one when name is set).
func get(ctx context.Context, st *datastore.Store, k kind, name, format string, out io.Writer) error {
	kvs, err := st.List(ctx, k.dir)
	if err != nil {
		return err
	}
	type item struct {
		name  string
		cells []string
		raw   json.RawMessage
	}
	var items []item
	for _, kv := range kvs {
		cells, n, err := k.row(kv.Value)
		if err != nil {
			return fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if name == "" || n == name {
			items = append(items, item{n, cells, hidePassword(kv.Value)})
		}
	}
	if name != "" && len(items) == 0 {
		return fmt.Errorf("%s %q not found", k.name, name)
	}
	switch format {
	case "", "table", "wide":
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(k.columns, "\t"))
		for _, it := range items {
			fmt.Fprintln(tw, strings.Join(it.cells, "\t"))
		}
		return tw.Flush()
	case "json", "yaml":
		var docs []map[string]any
		for _, it := range items {
			docs = append(docs, map[string]any{"apiVersion": APIVersion, "kind": k.name,
				"metadata": map[string]string{"name": it.name}, "spec": it.raw})
		}
		b, err := json.MarshalIndent(docs, "", "  ")
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
	return fmt.Errorf("output format %q: use table, wide, yaml or json", format)
}

func mustPrefix(s string) netip.Prefix {
	p, _ := netip.ParsePrefix(s)
	return p
}

// applyBGPPeer stores an external BGP peer (IPv4 or IPv6).
func applyBGPPeer(ctx context.Context, st *datastore.Store, d document) error {
	var sp struct {
		PeerIP   string   `json:"peerIP"`
		ASNumber uint32   `json:"asNumber"`
		Node     string   `json:"node,omitempty"`
		Password string   `json:"password,omitempty"`
		Filters  []string `json:"filters,omitempty"`
	}
	if err := decodeSpec(d, &sp); err != nil {
		return err
	}
	a, err := netip.ParseAddr(sp.PeerIP)
	if err != nil || a.Is4In6() || a.Zone() != "" {
		return fmt.Errorf("BGPPeer %s: spec.peerIP %q must be an IPv4 or IPv6 address", d.Metadata.Name, sp.PeerIP)
	}
	p := datastore.BGPPeer{Name: d.Metadata.Name, PeerIP: a.String(), ASNumber: sp.ASNumber, Node: sp.Node, Password: sp.Password, Filters: sp.Filters}
	return st.Put(ctx, datastore.BGPPeerKey(p.Name), &p)
}

// applyNode sets what users own on a Node (route reflector cluster, AS);
// the daemon owns the rest.
func applyNode(ctx context.Context, st *datastore.Store, d document) error {
	var sp struct {
		BGP struct {
			RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
			ASNumber                uint32 `json:"asNumber,omitempty"`
		} `json:"bgp"`
	}
	if err := decodeSpec(d, &sp); err != nil {
		return err
	}
	if id := sp.BGP.RouteReflectorClusterID; id != "" {
		if a, err := netip.ParseAddr(id); err != nil || !a.Is4() {
			return fmt.Errorf("Node %s: spec.bgp.routeReflectorClusterID %q must look like an IPv4 address (e.g. 224.0.0.1)", d.Metadata.Name, id)
		}
	}
	return datastore.Update(ctx, st, datastore.NodeKey(d.Metadata.Name), func(n *datastore.Node, _ bool) error {
		n.Name = d.Metadata.Name
		n.RouteReflectorClusterID, n.ASNumber = sp.BGP.RouteReflectorClusterID, sp.BGP.ASNumber
		return nil
	})
}
