package datastore

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"time"
)

// Prefix is the root of every key tabby writes; nothing outside it is touched.
const Prefix = "/tabby/v1/"

// Key layout (see DESIGN.md). Every resource is one JSON document.
const (
	poolsDir      = Prefix + "ippools/"
	nodesDir      = Prefix + "nodes/"
	networksDir   = Prefix + "networks/"
	profilesDir   = Prefix + "profiles/"
	endpointsDir  = Prefix + "workloadendpoints/"
	blocksDir     = Prefix + "ipam/blocks/"
	affinitiesDir = Prefix + "ipam/affinities/"
	handlesDir    = Prefix + "ipam/handles/"
	bgpConfigKey  = Prefix + "bgpconfiguration/default"
	bgpPeersDir   = Prefix + "bgppeers/"
	policiesDir   = Prefix + "networkpolicies/"
	livenessDir   = Prefix + "nodeliveness/"
)

// Encapsulation modes of a pool, as in Calico.
const (
	ModeNever       = "Never"
	ModeAlways      = "Always"
	ModeCrossSubnet = "CrossSubnet"
)

// IPPool is a range that container addresses come from, carved into blocks.
type IPPool struct {
	Name        string `json:"name"`
	CIDR        string `json:"cidr"`
	BlockSize   int    `json:"blockSize"`
	IPIPMode    string `json:"ipipMode"`
	VXLANMode   string `json:"vxlanMode"`
	NATOutgoing bool   `json:"natOutgoing"`
	Disabled    bool   `json:"disabled,omitempty"`
}

// Node is one host running tabby.
type Node struct {
	Name                    string `json:"name"`
	IPv4                    string `json:"ipv4Address,omitempty"` // address/prefix-length, like Calico's
	IPv6                    string `json:"ipv6Address,omitempty"`
	ASNumber                uint32 `json:"asNumber,omitempty"`
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
	// VXLAN tunnel endpoint: an address from the node's block and a MAC.
	VXLANTunnelAddress string `json:"vxlanTunnelAddress,omitempty"`
	VXLANTunnelMAC     string `json:"vxlanTunnelMAC,omitempty"`
	// IPIP tunnel address on tunl0: an address from the node's block.
	IPIPTunnelAddress string `json:"ipv4IPIPTunnelAddr,omitempty"`
	// WireguardPublicKey is the public key of the node's wireguard.tabby
	// (its private key never leaves the host); empty while the node does
	// not encrypt.
	WireguardPublicKey string `json:"wireguardPublicKey,omitempty"`
	// WireguardInterfaceAddr is wireguard.tabby's address, from the node's
	// block: the source of the host's own traffic to other hosts' blocks.
	WireguardInterfaceAddr string `json:"ipv4WireguardInterfaceAddr,omitempty"`
}

// Network is a Docker network of driver tabby, keyed by Docker's network ID.
// Name is empty until the daemon learns it from Docker (Docker never sends it).
type Network struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Pool   string `json:"pool"`             // what IPAM handed Docker: a subnet, or 0.0.0.0/0
	Subnet string `json:"subnet,omitempty"` // set when the user chose --subnet
	// IPv6 is set for --ipv6 networks; Subnet6 when an IPv6 --subnet was given.
	IPv6    bool   `json:"ipv6,omitempty"`
	Subnet6 string `json:"subnet6,omitempty"`
	// NoIPv4 marks an IPv6-only network (Docker 28's --ipv4=false); Pool
	// is empty then.
	NoIPv4 bool `json:"noIPv4,omitempty"`
	// Labels are the network's Docker labels (Compose's among them), which
	// its mirrors on other hosts carry too.
	Labels map[string]string `json:"labels,omitempty"`
	// Internal (--internal): no route beyond the cluster's pools, no
	// outgoing traffic beyond its endpoints, no published ports.
	Internal bool `json:"internal,omitempty"`
	// PublishEverywhere (-o tabby.publish=everywhere): published ports
	// answer on every tabby host.
	PublishEverywhere bool              `json:"publishEverywhere,omitempty"`
	MTU               int               `json:"mtu,omitempty"`
	Options           map[string]string `json:"options,omitempty"`
	Profile           string            `json:"profile"`
	Node              string            `json:"createdOn"`
	// Origin is the ID of the network this one replicates on another host;
	// empty for a network a user created.
	Origin string `json:"origin,omitempty"`
	// Driver is the name Docker knows the driver by (tabby or tabby:latest).
	Driver string `json:"driver,omitempty"`
	// AuxAddresses are the network's --aux-address reservations: assigned
	// in IPAM for the network's life, used by no endpoint.
	AuxAddresses []string `json:"auxAddresses,omitempty"`
}

// Rule is one profile or policy rule (Calico v3 shape, reduced).
type Rule struct {
	Action      string     `json:"action"`
	Protocol    string     `json:"protocol,omitempty"`
	Source      RuleTarget `json:"source,omitempty"`
	Destination RuleTarget `json:"destination,omitempty"`
}

// RuleTarget selects peers of a rule. Ports are numbers or ranges
// ("8000:8080"), for TCP and UDP rules.
type RuleTarget struct {
	Selector string   `json:"selector,omitempty"`
	Nets     []string `json:"nets,omitempty"`
	Ports    []Port   `json:"ports,omitempty"`
}

// Port is a port number or a range "LOW:HIGH"; YAML may give it as a number.
type Port string

// UnmarshalJSON accepts 8080 as well as "8080" and "8000:8080".
func (p *Port) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	*p = Port(s)
	return nil
}

// NetworkPolicy refines profiles for the endpoints its selector picks:
// policies are tried in ascending order, the first rule that matches decides
// (Allow or Deny); when none does, the endpoint's profiles decide.
type NetworkPolicy struct {
	Name     string  `json:"name"`
	Order    float64 `json:"order,omitempty"`
	Selector string  `json:"selector"`
	Ingress  []Rule  `json:"ingress,omitempty"`
	Egress   []Rule  `json:"egress,omitempty"`
}

// Profile holds the default rules of one network's endpoints.
type Profile struct {
	Name    string            `json:"name"`
	Network string            `json:"networkID"`
	Labels  map[string]string `json:"labels,omitempty"`
	Ingress []Rule            `json:"ingress"`
	Egress  []Rule            `json:"egress"`
}

// WorkloadEndpoint is one container interface on one host.
type WorkloadEndpoint struct {
	Node       string `json:"node"`
	EndpointID string `json:"endpointID"`
	NetworkID  string `json:"networkID"`
	Interface  string `json:"interfaceName"`
	IPv4       string `json:"ipv4,omitempty"`
	IPv6       string `json:"ipv6,omitempty"`
	MAC        string `json:"mac"`
	MTU        int    `json:"mtu,omitempty"`
	// Subnet is its network's --subnet (IPv4), routed in the container by
	// this endpoint's interface; empty for networks drawing from a pool.
	Subnet     string            `json:"subnet,omitempty"`
	Profiles   []string          `json:"profiles,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	SandboxKey string            `json:"sandboxKey,omitempty"`
	Gateway    string            `json:"gateway,omitempty"`
	// Workload is the container's name, learned from Docker (for DNS).
	Workload string `json:"workload,omitempty"`
	// Aliases are its other names on its network (--network-alias,
	// Compose's service name), learned from Docker (for DNS).
	Aliases []string `json:"aliases,omitempty"`
	// Internal copies its network's --internal flag.
	Internal bool `json:"internal,omitempty"`
	// PublishEverywhere copies its network's -o tabby.publish=everywhere:
	// its published ports answer on every tabby host.
	PublishEverywhere bool `json:"publishEverywhere,omitempty"`
	// Ports are the container's published ports (docker run -p) on its host.
	Ports []PortMapping `json:"ports,omitempty"`
}

// PortMapping is one published port: HostPort on HostIP ("" for every
// address of the host) reaches Port of the container, for Proto tcp or udp.
type PortMapping struct {
	Proto    string `json:"proto"`
	HostIP   string `json:"hostIP,omitempty"`
	HostPort uint16 `json:"hostPort"`
	Port     uint16 `json:"port"`
}

// Addrs returns the endpoint's addresses (IPv4, then IPv6 when it has one).
func (e WorkloadEndpoint) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{e.IPv4, e.IPv6} {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Block is a power-of-two slice of a pool. Allocations holds, per ordinal,
// the handle that owns the address, or "" when it is free.
type Block struct {
	CIDR        string   `json:"cidr"`
	Pool        string   `json:"pool"`
	Affinity    string   `json:"affinity,omitempty"` // node name, "" when none
	Allocations []string `json:"allocations"`
}

// BlockOf tells the stored blocks whose affinity names node, from their
// bytes, as a view keeps them (View.ThinUnless); a block encoded otherwise
// than tabby encodes it is judged another's.
func BlockOf(node string) func(value []byte) bool { return contains("affinity", node) }

// HandleOf tells the stored handles that name node, from their bytes, as
// BlockOf tells blocks.
func HandleOf(node string) func(value []byte) bool { return contains("node", node) }

func contains(field, node string) func(value []byte) bool {
	name, _ := json.Marshal(node)
	marker := append([]byte(`"`+field+`":`), name...)
	return func(value []byte) bool { return bytes.Contains(value, marker) }
}

// Affinity records that a node owns a block; its presence is the claim.
type Affinity struct {
	Node  string `json:"node"`
	Block string `json:"block"`
}

// Handle lists where the addresses of one allocation live, so a release by
// handle finds them without scanning every block.
type Handle struct {
	ID     string         `json:"id"`
	Node   string         `json:"node"`
	Blocks map[string]int `json:"blocks"`
}

// BGPConfiguration is the cluster-wide BGP setting. The mesh is on unless
// NodeToNodeMeshEnabled is set to false.
type BGPConfiguration struct {
	ASNumber              uint32 `json:"asNumber,omitempty"`
	NodeToNodeMeshEnabled *bool  `json:"nodeToNodeMeshEnabled,omitempty"`
	// HoldTime (seconds) is the BGP hold time and how long a host that
	// stopped answering keeps its sessions, and so its routes, at the
	// others (its liveness lease in etcd).
	HoldTime uint32 `json:"holdTime,omitempty"`
}

// FelixConfiguration holds dataplane settings, as Calico's resource of the
// name: "default" for the cluster, "node.NAME" for one node (its fields
// override the default's).
type FelixConfiguration struct {
	Name string `json:"name"`
	// WireguardEnabled encrypts container traffic between hosts that both
	// have it on.
	WireguardEnabled *bool `json:"wireguardEnabled,omitempty"`
	// GoGCThreshold is the daemon's Go GC percentage (GOGC): how far the
	// heap may grow past what is live before a collection; -1 collects
	// only at GoMemoryLimitMB. Unset: DefaultGoGC.
	GoGCThreshold *int `json:"goGCThreshold,omitempty"`
	// GoMemoryLimitMB is the daemon's soft memory limit (GOMEMLIMIT);
	// unset or -1: none.
	GoMemoryLimitMB *int `json:"goMemoryLimitMB,omitempty"`
}

// DefaultGoGC is Felix's default GC threshold: a daemon whose heap is
// mostly the cluster's records, held for its lifetime, needs little room
// to grow, and 40 costs about a third of the memory of Go's 100 for a few
// more collections.
const DefaultGoGC = 40

// GoRuntime is the GC threshold and memory limit (MB, -1: none) of node's
// daemon: its own settings, else the cluster's, else the defaults.
func GoRuntime(node string, configs []FelixConfiguration) (gcPercent, limitMB int) {
	gcPercent, limitMB = DefaultGoGC, -1
	eachFor(node, configs, func(c FelixConfiguration) {
		if c.GoGCThreshold != nil {
			gcPercent = *c.GoGCThreshold
		}
		if c.GoMemoryLimitMB != nil {
			limitMB = *c.GoMemoryLimitMB
		}
	})
	return gcPercent, limitMB
}

// WireGuardFor tells whether node encrypts: its own setting, else the
// cluster's, else off.
func WireGuardFor(node string, configs []FelixConfiguration) bool {
	on := false
	eachFor(node, configs, func(c FelixConfiguration) {
		if c.WireguardEnabled != nil {
			on = *c.WireguardEnabled
		}
	})
	return on
}

// eachFor visits the configs that apply to node, the cluster's before the
// node's own, so that a field the latter sets wins.
func eachFor(node string, configs []FelixConfiguration, fn func(FelixConfiguration)) {
	for _, name := range []string{"default", "node." + node} {
		for _, c := range configs {
			if c.Name == name {
				fn(c)
			}
		}
	}
}

// DefaultHoldTime is BGP's customary hold time.
const DefaultHoldTime = 90

// Hold returns the configured hold time or the default.
func (c BGPConfiguration) Hold() uint32 {
	if c.HoldTime == 0 {
		return DefaultHoldTime
	}
	return max(c.HoldTime, 3)
}

// LivenessGrace is how long a node's liveness key may be missing before
// its peers drop its sessions. An etcd outage longer than the lease TTL
// ends every lease at once; the daemons take new ones within a second or
// two of etcd answering, and the grace keeps routes up meanwhile. It is a
// third of the hold time, at most 10 s, so that lease TTL plus grace is
// the hold time.
func (c BGPConfiguration) LivenessGrace() time.Duration {
	return time.Duration(min(10, c.Hold()/3)) * time.Second
}

// LivenessTTL is the TTL of a node's liveness lease: the hold time less
// the grace.
func (c BGPConfiguration) LivenessTTL() int64 {
	return int64(c.Hold()) - int64(c.LivenessGrace()/time.Second)
}

// Encapsulated reports whether mode (a pool's ipipMode or vxlanMode) is on.
func Encapsulated(mode string) bool { return mode != "" && mode != ModeNever }

// Tunnels reports whether a pool in mode (ipipMode or vxlanMode) carries
// traffic from the host at mine (its address and prefix) to the host at
// peer through its tunnel: always for Always, for CrossSubnet when peer
// lies outside mine's subnet (as Calico decides, from the sender's prefix
// alone). The driver (tunnel routes) and BGP (which routes it leaves to a
// tunnel) both ask this, so they never disagree about a destination, even
// between hosts of one LAN configured with different prefix lengths.
func Tunnels(mode string, mine netip.Prefix, peer netip.Addr) bool {
	switch mode {
	case ModeAlways:
		return true
	case ModeCrossSubnet:
		return !mine.Masked().Contains(peer)
	}
	return false
}

// DefaultASNumber is Calico's default AS for every node.
const DefaultASNumber = 64512

// MeshEnabled reports whether the node-to-node mesh is on (the default).
func (c BGPConfiguration) MeshEnabled() bool {
	return c.NodeToNodeMeshEnabled == nil || *c.NodeToNodeMeshEnabled
}

// AS returns the configured AS or the default.
func (c BGPConfiguration) AS() uint32 {
	if c.ASNumber == 0 {
		return DefaultASNumber
	}
	return c.ASNumber
}

// BGPPeer is an external BGP peer, for every node (Node empty) or one.
type BGPPeer struct {
	Name     string `json:"name"`
	PeerIP   string `json:"peerIP"`
	ASNumber uint32 `json:"asNumber"`
	Node     string `json:"node,omitempty"`
	Password string `json:"password,omitempty"`
	// Filters name the BGPFilters that say what the peer may announce
	// (nothing without one).
	Filters []string `json:"filters,omitempty"`
}

// BGPFilter says what external BGP peers that name it may announce (Calico
// v3's BGPFilter, import rules): rules in order, the first that matches a
// prefix decides; a prefix no rule matches is rejected.
type BGPFilter struct {
	Name     string       `json:"name"`
	ImportV4 []FilterRule `json:"importV4,omitempty"`
	ImportV6 []FilterRule `json:"importV6,omitempty"`
	// Export rules narrow what this host tells the peer; it never tells an
	// external peer more than its own blocks and addresses.
	ExportV4 []FilterRule `json:"exportV4,omitempty"`
	ExportV6 []FilterRule `json:"exportV6,omitempty"`
}

// FilterRule is one BGPFilter rule: Action Accept or Reject for prefixes
// that relate to CIDR as MatchOperator says (In: inside it, itself
// included; NotIn: not inside it; Equal: it; NotEqual: not it).
type FilterRule struct {
	Action        string `json:"action"`
	MatchOperator string `json:"matchOperator"`
	CIDR          string `json:"cidr"`
}

// cidrKey turns 10.0.0.0/26 into 10.0.0.0-26, safe as one key segment.
func cidrKey(cidr string) string { return strings.ReplaceAll(cidr, "/", "-") }

// KeyToCIDR reverses cidrKey.
func KeyToCIDR(k string) string {
	i := strings.LastIndex(k, "-")
	if i < 0 {
		return k
	}
	return k[:i] + "/" + k[i+1:]
}

// Keys of each resource kind.
func PoolKey(name string) string           { return poolsDir + name }
func NodeKey(name string) string           { return nodesDir + name }
func NetworkKey(id string) string          { return networksDir + id }
func ProfileKey(name string) string        { return profilesDir + name }
func EndpointKey(node, id string) string   { return endpointsDir + node + "/" + id }
func EndpointsOf(node string) string       { return endpointsDir + node + "/" }
func BlockKey(cidr string) string          { return blocksDir + cidrKey(cidr) }
func AffinityKey(node, cidr string) string { return affinitiesDir + node + "/" + cidrKey(cidr) }
func AffinitiesOf(node string) string      { return affinitiesDir + node + "/" }
func HandleKey(id string) string           { return handlesDir + id }
func BGPConfigKey() string                 { return bgpConfigKey }
func FelixConfigKey(name string) string    { return FelixConfigDir + name }
func BGPPeerKey(name string) string        { return bgpPeersDir + name }
func BGPFilterKey(name string) string      { return BGPFiltersDir + name }
func PolicyKey(name string) string         { return policiesDir + name }
func LivenessKey(node string) string       { return livenessDir + node }

// Directories, for List and Watch.
const (
	PoolsDir       = poolsDir
	NodesDir       = nodesDir
	NetworksDir    = networksDir
	ProfilesDir    = profilesDir
	EndpointsDir   = endpointsDir
	BlocksDir      = blocksDir
	AffinitiesDir  = affinitiesDir
	HandlesDir     = handlesDir
	BGPPeersDir    = bgpPeersDir
	BGPFiltersDir  = Prefix + "bgpfilters/"
	BGPConfigDir   = Prefix + "bgpconfiguration/"
	FelixConfigDir = Prefix + "felixconfiguration/"
	PoliciesDir    = policiesDir
	LivenessDir    = livenessDir
)
