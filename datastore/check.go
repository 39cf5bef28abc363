package datastore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrInvalid means a stored record does not hold together: written straight
// to etcd, by another version, or by someone who should not have.
var ErrInvalid = errors.New("invalid record")

// Checked is a record that can say whether it holds together, given the key
// it was read from (empty: not read from a key). Reads check it: Get fails
// with ErrInvalid, ListAs skips the record with a warning, so one bad record
// never blocks the others.
type Checked interface {
	Check(key string) error
}

// checkRecord runs v's Check when it has one.
func checkRecord(key string, v any) error {
	if c, ok := v.(Checked); ok {
		if err := c.Check(key); err != nil {
			return fmt.Errorf("%s: %w: %v", key, ErrInvalid, err)
		}
	}
	return nil
}

// ValidName accepts what a node, pool or peer name may be: it becomes part
// of etcd keys, GoBGP set names and log lines.
func ValidName(n string) bool { return nameOf(n, 253) }

// nameOf reports whether s has 1 to max letters, digits, '-', '.' and '_'.
func nameOf(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// keyNames checks that key (when given) is want.
func keyNames(key, want string) error {
	if key != "" && key != want {
		return fmt.Errorf("stored under %s, its content names %s", key, want)
	}
	return nil
}

func optAddr(field, s string, prefixOK bool) error {
	if s == "" {
		return nil
	}
	if prefixOK {
		if _, err := netip.ParsePrefix(s); err == nil {
			return nil
		}
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("%s %q is not an address", field, s)
	}
	return nil
}

// Check implements Checked.
func (n Node) Check(key string) error {
	if !ValidName(n.Name) {
		return fmt.Errorf("node name %q", n.Name)
	}
	if err := keyNames(key, NodeKey(n.Name)); err != nil {
		return err
	}
	for field, s := range map[string]string{"ipv4Address": n.IPv4, "ipv6Address": n.IPv6} {
		if err := optAddr(field, s, true); err != nil {
			return err
		}
	}
	for field, s := range map[string]string{"vxlanTunnelAddress": n.VXLANTunnelAddress, "ipv4IPIPTunnelAddr": n.IPIPTunnelAddress,
		"ipv4WireguardInterfaceAddr": n.WireguardInterfaceAddr} {
		if err := optAddr(field, s, false); err != nil {
			return err
		}
	}
	if n.VXLANTunnelMAC != "" {
		if _, err := net.ParseMAC(n.VXLANTunnelMAC); err != nil {
			return fmt.Errorf("vxlanTunnelMAC %q", n.VXLANTunnelMAC)
		}
	}
	if k := n.WireguardPublicKey; k != "" {
		if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 {
			return fmt.Errorf("wireguardPublicKey %q: not a WireGuard key (32 bytes in base64)", k)
		}
	}
	return nil
}

// Check implements Checked.
func (c FelixConfiguration) Check(key string) error {
	if c.Name != "default" && !(strings.HasPrefix(c.Name, "node.") && ValidName(strings.TrimPrefix(c.Name, "node."))) {
		return fmt.Errorf("FelixConfiguration %q: metadata.name must be default or node.NODENAME", c.Name)
	}
	if g := c.GoGCThreshold; g != nil && (*g < -1 || *g == 0) {
		return fmt.Errorf("FelixConfiguration %s: spec.goGCThreshold %d must be a percentage above 0 (Felix's default is 40), or -1 to collect only at goMemoryLimitMB", c.Name, *g)
	}
	if g := c.GoGCThreshold; g != nil && *g == -1 && (c.GoMemoryLimitMB == nil || *c.GoMemoryLimitMB <= 0) {
		return fmt.Errorf("FelixConfiguration %s: spec.goGCThreshold -1 needs spec.goMemoryLimitMB: without either the heap grows without bound", c.Name)
	}
	if m := c.GoMemoryLimitMB; m != nil && (*m < -1 || *m == 0) {
		return fmt.Errorf("FelixConfiguration %s: spec.goMemoryLimitMB %d must be a size in MB above 0, or -1 for no limit", c.Name, *m)
	}
	return keyNames(key, FelixConfigKey(c.Name))
}

// Check implements Checked; it names the bad field as `tabby apply` shows
// it. The defaults (blockSize, modes) must be filled first.
func (p IPPool) Check(key string) error {
	if !ValidName(p.Name) {
		return fmt.Errorf("IPPool name %q may hold letters, digits, '-', '.' and '_'", p.Name)
	}
	if err := keyNames(key, PoolKey(p.Name)); err != nil {
		return err
	}
	pr, err := netip.ParsePrefix(p.CIDR)
	if err != nil {
		return fmt.Errorf("IPPool %s: spec.cidr %q is not a CIDR (example: 10.244.0.0/16)", p.Name, p.CIDR)
	}
	if pr.Masked() != pr {
		return fmt.Errorf("IPPool %s: spec.cidr %s has host bits set; use %s", p.Name, p.CIDR, pr.Masked())
	}
	if p.BlockSize < pr.Bits() || p.BlockSize > pr.Addr().BitLen() {
		return fmt.Errorf("IPPool %s: spec.blockSize %d must lie between the pool's prefix length %d and %d",
			p.Name, p.BlockSize, pr.Bits(), pr.Addr().BitLen())
	}
	if pr.Addr().BitLen()-p.BlockSize > 16 {
		return fmt.Errorf("IPPool %s: spec.blockSize %d is too small a prefix (blocks over 65536 addresses); use at least /%d",
			p.Name, p.BlockSize, pr.Addr().BitLen()-16)
	}
	on := func(m string) bool { return m != "" && m != ModeNever }
	for field, v := range map[string]string{"ipipMode": p.IPIPMode, "vxlanMode": p.VXLANMode} {
		switch v {
		case "", ModeNever, ModeAlways, ModeCrossSubnet: // "": Never, as older records say it
		default:
			return fmt.Errorf("IPPool %s: spec.%s %q must be Always, CrossSubnet or Never", p.Name, field, v)
		}
	}
	if on(p.IPIPMode) && on(p.VXLANMode) {
		return fmt.Errorf("IPPool %s: spec.ipipMode and spec.vxlanMode cannot both be on; set one of them to Never", p.Name)
	}
	if pr.Addr().Is6() && (on(p.IPIPMode) || on(p.VXLANMode)) {
		return fmt.Errorf("IPPool %s: IPv6 pools are routed by BGP only; set spec.ipipMode and spec.vxlanMode to Never", p.Name)
	}
	return nil
}

// Check implements Checked.
func (p BGPPeer) Check(key string) error {
	if !ValidName(p.Name) {
		return fmt.Errorf("BGPPeer name %q", p.Name)
	}
	if err := keyNames(key, BGPPeerKey(p.Name)); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(p.PeerIP); err != nil {
		return fmt.Errorf("BGPPeer %s: peerIP %q is not an address", p.Name, p.PeerIP)
	}
	if p.Node != "" && !ValidName(p.Node) {
		return fmt.Errorf("BGPPeer %s: node %q", p.Name, p.Node)
	}
	return nil
}

// Check implements Checked: the rules themselves are the BGP package's.
func (f BGPFilter) Check(key string) error {
	if !ValidName(f.Name) {
		return fmt.Errorf("BGPFilter name %q", f.Name)
	}
	return keyNames(key, BGPFilterKey(f.Name))
}

// Check implements Checked.
func (n Network) Check(key string) error {
	if n.ID == "" || strings.ContainsAny(n.ID, "/ ") {
		return fmt.Errorf("network ID %q", n.ID)
	}
	if err := keyNames(key, NetworkKey(n.ID)); err != nil {
		return err
	}
	for field, s := range map[string]string{"pool": n.Pool, "subnet": n.Subnet, "subnet6": n.Subnet6} {
		if _, err := netip.ParsePrefix(s); s != "" && err != nil {
			return fmt.Errorf("network %s: %s %q is not a CIDR", n.ID, field, s)
		}
	}
	for _, a := range n.AuxAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("network %s: aux address %q", n.ID, a)
		}
	}
	return nil
}

// validIfName accepts a Linux interface name tabby could have made.
func validIfName(s string) bool { return nameOf(s, 15) }

// Check implements Checked: an endpoint's interface and addresses go into
// routes and rules, so they must be what tabby writes.
func (e WorkloadEndpoint) Check(key string) error {
	if !ValidName(e.Node) || e.EndpointID == "" || strings.ContainsAny(e.EndpointID, "/ ") {
		return fmt.Errorf("endpoint %q of node %q", e.EndpointID, e.Node)
	}
	if err := keyNames(key, EndpointKey(e.Node, e.EndpointID)); err != nil {
		return err
	}
	if !validIfName(e.Interface) {
		return fmt.Errorf("endpoint %s: interface name %q", e.EndpointID, e.Interface)
	}
	if err := optAddr("gateway", e.Gateway, true); err != nil {
		return fmt.Errorf("endpoint %s: %w", e.EndpointID, err)
	}
	for _, f := range []struct {
		field, s string
		v4       bool
	}{{"ipv4", e.IPv4, true}, {"ipv6", e.IPv6, false}} {
		if a, err := netip.ParseAddr(f.s); f.s != "" && (err != nil || a.Is4() != f.v4 || a.Zone() != "") {
			return fmt.Errorf("endpoint %s: %s %q", e.EndpointID, f.field, f.s)
		}
	}
	if _, err := netip.ParsePrefix(e.Subnet); e.Subnet != "" && err != nil {
		return fmt.Errorf("endpoint %s: subnet %q", e.EndpointID, e.Subnet)
	}
	if e.MAC != "" {
		if _, err := net.ParseMAC(e.MAC); err != nil {
			return fmt.Errorf("endpoint %s: mac %q", e.EndpointID, e.MAC)
		}
	}
	for _, a := range e.Aliases {
		if !ValidName(a) {
			return fmt.Errorf("endpoint %s: alias %q", e.EndpointID, a)
		}
	}
	for _, p := range e.Ports {
		if (p.Proto != "tcp" && p.Proto != "udp") || p.HostPort == 0 || p.Port == 0 || optAddr("hostIP", p.HostIP, false) != nil {
			return fmt.Errorf("endpoint %s: published port %+v", e.EndpointID, p)
		}
	}
	return nil
}

// Check implements Checked: the rules are the policy package's.
func (p NetworkPolicy) Check(key string) error {
	if !ValidName(p.Name) {
		return fmt.Errorf("NetworkPolicy name %q", p.Name)
	}
	return keyNames(key, PolicyKey(p.Name))
}

// Check implements Checked.
func (p Profile) Check(key string) error {
	if !ValidName(p.Name) {
		return fmt.Errorf("profile name %q", p.Name)
	}
	return keyNames(key, ProfileKey(p.Name))
}
