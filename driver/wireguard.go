package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/policy"
)

// WireGuard's overhead on an IPv4 underlay (outer IPv4 20, UDP 8, WireGuard
// 32) and on an IPv6 one (outer IPv6 40).
const (
	wgOverhead4 = 60
	wgOverhead6 = 80
)

// wgState is what the WireGuard loop last found, for node status.
type wgState struct {
	mu  sync.Mutex
	err error // why this host does not encrypt though it should
	// from are the blocks that reach this host only encrypted (the policy
	// sync drops them arriving any other way).
	from []netip.Prefix
	// published is the key this daemon last wrote to its Node (nil: none
	// since it started).
	published *string
}

// encryptedPeers is the policy's input: the blocks of the peers this host
// encrypts with.
func (d *Driver) encryptedPeers() policy.Encrypted {
	d.wg.mu.Lock()
	defer d.wg.mu.Unlock()
	return policy.Encrypted{Iface: dataplane.WireGuardDevice, From: slices.Clone(d.wg.from)}
}

// setEncrypted records the encrypted blocks and wakes the policy sync when
// they changed.
func (d *Driver) setEncrypted(from []netip.Prefix) {
	slices.SortFunc(from, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	d.wg.mu.Lock()
	changed := !slices.Equal(d.wg.from, from)
	d.wg.from = from
	d.wg.mu.Unlock()
	if changed {
		d.pol.mu.Lock()
		d.pol.rebuild = true // the antispoof chain changes, not a set
		d.pol.mu.Unlock()
		d.localChanged()
	}
}

// SetWireGuardKeyFile names where this host's WireGuard private key is kept
// (created 0600 on first use; never written to etcd). Removing the file and
// restarting the daemon rekeys.
func (d *Driver) SetWireGuardKeyFile(path string) { d.wgKeyFile = path }

// WireGuardError is why this host does not encrypt although its
// FelixConfiguration says it should (nil when it does, or should not).
func (d *Driver) WireGuardError() error {
	d.wg.mu.Lock()
	defer d.wg.mu.Unlock()
	return d.wg.err
}

// WireGuardActive tells whether this node encrypts: its setting is on and
// the kernel can (as far as the last sync found).
func (d *Driver) WireGuardActive(ctx context.Context) bool {
	return d.wireGuardOn(ctx) && d.WireGuardError() == nil
}

// wireGuardOn reads whether this node should encrypt.
func (d *Driver) wireGuardOn(ctx context.Context) bool {
	configs, err := fromView[datastore.FelixConfiguration](ctx, d, datastore.FelixConfigDir)
	return err == nil && datastore.WireGuardFor(d.node, configs)
}

// SyncWireGuard makes wireguard.tabby match etcd: while this node's
// FelixConfiguration turns WireGuard on, the device holds the host's key
// and one peer per other node that published a key, with that node's
// blocks as its allowed IPs, and `BLOCK dev wireguard.tabby` routes those
// blocks ahead of every other path. Traffic with a node that publishes no
// key (off, or no module) keeps its clear routes. Off, or where the kernel
// has no wireguard module, the device, its routes and the published key go.
func (d *Driver) SyncWireGuard(ctx context.Context) error {
	nodes, err := fromView[datastore.Node](ctx, d, datastore.NodesDir)
	if err != nil {
		return err
	}
	var self datastore.Node
	for _, n := range nodes {
		if n.Name == d.node {
			self = n
		}
	}
	on := d.wireGuardOn(ctx)
	var why error
	if on {
		why = d.dp.WireGuardSupported()
	}
	d.wg.mu.Lock()
	d.wg.err = why
	d.wg.mu.Unlock()
	// Not encrypting: nothing of it may stay, here or in etcd.
	off := func(why error) error {
		d.setEncrypted(nil)
		return errors.Join(why, d.dp.ClearWireGuard(), d.publishKey(ctx, self, ""))
	}
	if !on || why != nil {
		return off(why)
	}
	key, err := d.wireGuardKey()
	if err != nil {
		return off(err)
	}
	peers, blocks := d.wireGuardPeers(nodes)
	mtu := 0
	if d.hostMTU > 0 {
		mtu = d.hostMTU - wgOverhead(self)
	}
	addr, _ := netip.ParseAddr(self.WireguardInterfaceAddr) // none yet: the tunnel loop is assigning it
	idx, err := d.dp.EnsureWireGuard(key, mtu, addr, peers)
	if err != nil {
		d.setEncrypted(nil)
		return errors.Join(err, d.publishKey(ctx, self, ""))
	}
	routes := make([]dataplane.Route, 0, len(blocks))
	for _, b := range blocks {
		routes = append(routes, dataplane.Route{Dst: b, Link: idx})
	}
	// Routes first, then the key: a peer starts encrypting towards this
	// host only once this host can answer encrypted.
	if err := d.dp.Table().Sync(dataplane.KindWireGuard, routes); err != nil {
		return err
	}
	if err := d.publishKey(ctx, self, key.PublicKey().String()); err != nil {
		return err
	}
	// Once peers can know this host's key, their blocks may come only
	// through the tunnel.
	d.setEncrypted(blocks)
	return nil
}

// wgOverhead is WireGuard's overhead on the node's underlay.
func wgOverhead(n datastore.Node) int {
	if n.IPv4 == "" && n.IPv6 != "" {
		return wgOverhead6
	}
	return wgOverhead4
}

// wireGuardPeers lists the other nodes that publish a key, with their
// blocks (from the affinities), and all those blocks.
func (d *Driver) wireGuardPeers(nodes []datastore.Node) ([]dataplane.WGPeer, []netip.Prefix) {
	byNode := d.affineBlocks()
	var peers []dataplane.WGPeer
	var all []netip.Prefix
	for _, n := range nodes {
		if n.Name == d.node || n.WireguardPublicKey == "" {
			continue
		}
		pub, err := wgtypes.ParseKey(n.WireguardPublicKey)
		host, err2 := netip.ParsePrefix(n.IPv4)
		if err2 != nil {
			host, err2 = netip.ParsePrefix(n.IPv6)
		}
		if err != nil || err2 != nil {
			continue
		}
		p := dataplane.WGPeer{PublicKey: pub, Endpoint: netip.AddrPortFrom(host.Addr(), dataplane.WireGuardPort),
			AllowedIPs: byNode[n.Name]}
		peers = append(peers, p)
		all = append(all, p.AllowedIPs...)
	}
	return peers, all
}

// wireGuardKey reads this host's private key, making one the first time.
func (d *Driver) wireGuardKey() (wgtypes.Key, error) {
	if d.wgKeyFile == "" {
		return wgtypes.Key{}, errors.New("no file for the WireGuard key (SetWireGuardKeyFile)")
	}
	if b, err := os.ReadFile(d.wgKeyFile); err == nil {
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("WireGuard key %s: %w (remove the file to make a new key)", d.wgKeyFile, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(d.wgKeyFile), 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key: %w", err)
	}
	tmp := d.wgKeyFile + ".new"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key: %w", err)
	}
	if err := os.Rename(tmp, d.wgKeyFile); err != nil {
		os.Remove(tmp)
		return wgtypes.Key{}, fmt.Errorf("WireGuard key: %w", err)
	}
	return k, nil
}

// publishKey records (or, with "", clears) this node's public key. The
// view may not show this daemon's own last write yet, so it is skipped only
// when the view and that write agree.
func (d *Driver) publishKey(ctx context.Context, self datastore.Node, pub string) error {
	d.wg.mu.Lock()
	last := d.wg.published
	d.wg.mu.Unlock()
	if self.Name == "" || (self.WireguardPublicKey == pub && (last == nil || *last == pub)) {
		return nil
	}
	err := datastore.Update(ctx, d.store, datastore.NodeKey(d.node), func(n *datastore.Node, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		n.WireguardPublicKey = pub
		return nil
	})
	if err == nil {
		d.wg.mu.Lock()
		d.wg.published = &pub
		d.wg.mu.Unlock()
	}
	return err
}

// WireGuardStatus is what `tabby node status` shows of encryption.
type WireGuardStatus struct {
	Enabled   bool           `json:"enabled"`         // this node's setting
	Error     string         `json:"error,omitempty"` // why it does not encrypt anyway
	PublicKey string         `json:"publicKey,omitempty"`
	Port      int            `json:"port,omitempty"`
	Peers     []WGPeerStatus `json:"peers,omitempty"`
}

// WGPeerStatus is one peer of wireguard.tabby.
type WGPeerStatus struct {
	Node            string   `json:"node"`
	Endpoint        string   `json:"endpoint"`
	PublicKey       string   `json:"publicKey"`
	AllowedIPs      []string `json:"allowedIPs"`
	LatestHandshake string   `json:"latestHandshake"` // RFC 3339, or "never"
}

// WireGuard reads wireguard.tabby for node status: its key and peers, each
// named by the node that published its key.
func (d *Driver) WireGuard(ctx context.Context) (WireGuardStatus, error) {
	st := WireGuardStatus{Enabled: d.wireGuardOn(ctx)}
	if err := d.WireGuardError(); err != nil {
		st.Error = err.Error()
	}
	dev, ok, err := d.dp.WireGuard()
	if err != nil || !ok {
		return st, err
	}
	names := map[string]string{}
	for _, n := range datastore.ViewList[datastore.Node](d.view, datastore.NodesDir) {
		names[n.WireguardPublicKey] = n.Name
	}
	st.PublicKey, st.Port = dev.PublicKey.String(), dev.ListenPort
	for _, p := range dev.Peers {
		ps := WGPeerStatus{Node: names[p.PublicKey.String()], PublicKey: p.PublicKey.String(), LatestHandshake: "never"}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		for _, a := range p.AllowedIPs {
			ps.AllowedIPs = append(ps.AllowedIPs, a.String())
		}
		if !p.LastHandshakeTime.IsZero() {
			ps.LatestHandshake = p.LastHandshakeTime.UTC().Format(time.RFC3339)
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}
