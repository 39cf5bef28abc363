package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuard device settings, as Calico's wireguard.cali.
const (
	WireGuardDevice = "wireguard.tabby"
	WireGuardPort   = 51820
)

// ErrNoWireGuard means the kernel cannot make WireGuard devices.
var ErrNoWireGuard = errors.New("WireGuard needs the kernel's wireguard module, which this kernel does not have")

// wgProbe is a throwaway device name (15 characters at most).
const wgProbe = "tabbywgprobe"

// WGPeer is another host's end of the encrypted mesh.
type WGPeer struct {
	PublicKey  wgtypes.Key
	Endpoint   netip.AddrPort // its host address and port
	AllowedIPs []netip.Prefix // its blocks: what may come from it, and go to it
}

// wg is the namespace's WireGuard control socket, opened on first use.
type wg struct {
	once sync.Once
	c    *wgctrl.Client
	err  error
}

// wgClient opens wgctrl's generic netlink socket in the dataplane's
// namespace. wgctrl has no namespace option and a socket stays in the
// namespace it was opened in, so the one thread that opens it enters the
// namespace for that call alone.
func (d *Dataplane) wgClient() (*wgctrl.Client, error) {
	d.wg.once.Do(func() {
		if d.nsPath == "" {
			d.wg.c, d.wg.err = wgctrl.New()
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
			target, err := netns.GetFromPath(d.nsPath)
			if err != nil {
				d.wg.err = err
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				d.wg.err = err
				return
			}
			d.wg.c, d.wg.err = wgctrl.New()
		}()
		<-done
	})
	return d.wg.c, d.wg.err
}

// WireGuardSupported reports whether this kernel makes WireGuard devices;
// the probe device is removed at once.
func (d *Dataplane) WireGuardSupported() error {
	if l, err := d.h.LinkByName(WireGuardDevice); err == nil && l.Type() == "wireguard" {
		return nil
	}
	probe := &netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: wgProbe}}
	if err := d.h.LinkAdd(probe); err != nil {
		return fmt.Errorf("%w (%v): load the wireguard module, or set wireguardEnabled: false", ErrNoWireGuard, err)
	}
	return d.DeleteLink(wgProbe)
}

// EnsureWireGuard makes wireguard.tabby with this host's private key, the
// MTU, addr (when valid) as its only address and exactly peers, up, and
// returns its index. A device it had to create is removed again when
// configuring it fails.
func (d *Dataplane) EnsureWireGuard(key wgtypes.Key, mtu int, addr netip.Addr, peers []WGPeer) (int, error) {
	if err := d.WireGuardSupported(); err != nil {
		return 0, err
	}
	link, err := d.h.LinkByName(WireGuardDevice)
	created := false
	if err == nil && link.Type() != "wireguard" {
		if err := d.DeleteLink(WireGuardDevice); err != nil {
			return 0, err
		}
		link = nil
	}
	if link == nil || err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = WireGuardDevice, mtu
		if err := d.h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
			return 0, fmt.Errorf("create %s: %w", WireGuardDevice, err)
		}
		created = true
		if link, err = d.h.LinkByName(WireGuardDevice); err != nil {
			return 0, err
		}
	}
	fail := func(err error) (int, error) {
		if created {
			err = errors.Join(err, d.DeleteLink(WireGuardDevice))
		}
		return 0, err
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(link, mtu); err != nil {
			return fail(fmt.Errorf("%s mtu: %w", WireGuardDevice, err))
		}
	}
	c, err := d.wgClient()
	if err != nil {
		return fail(fmt.Errorf("wireguard control socket: %w", err))
	}
	dev, err := c.Device(WireGuardDevice)
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", WireGuardDevice, err))
	}
	if cfg, change := wgChanges(dev, key, peers); change {
		if err := c.ConfigureDevice(WireGuardDevice, cfg); err != nil {
			return fail(fmt.Errorf("configure %s: %w", WireGuardDevice, err))
		}
	}
	if err := d.syncAddr(link, addr); err != nil {
		return fail(err)
	}
	if err := d.h.LinkSetUp(link); err != nil {
		return fail(fmt.Errorf("%s up: %w", WireGuardDevice, err))
	}
	return link.Attrs().Index, nil
}

// wgChanges is what turns the device into key and peers, touching only
// peers that differ: replacing a peer drops its session, so a change
// elsewhere in the cluster must not cost every peer a new handshake.
func wgChanges(dev *wgtypes.Device, key wgtypes.Key, peers []WGPeer) (wgtypes.Config, bool) {
	var cfg wgtypes.Config
	change := false
	if dev.PrivateKey != key {
		cfg.PrivateKey, change = &key, true
	}
	if dev.ListenPort != WireGuardPort {
		port := WireGuardPort
		cfg.ListenPort, change = &port, true
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		have[p.PublicKey] = p
	}
	for _, p := range peers {
		if h, ok := have[p.PublicKey]; ok && samePeer(h, p) {
			delete(have, p.PublicKey)
			continue
		}
		delete(have, p.PublicKey)
		pc := wgtypes.PeerConfig{PublicKey: p.PublicKey, ReplaceAllowedIPs: true,
			Endpoint: net.UDPAddrFromAddrPort(p.Endpoint)}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, *prefixNet(a))
		}
		cfg.Peers, change = append(cfg.Peers, pc), true
	}
	for k := range have { // peers no longer wanted
		cfg.Peers, change = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true}), true
	}
	return cfg, change
}

// samePeer reports whether the device's peer already is p.
func samePeer(h wgtypes.Peer, p WGPeer) bool {
	if h.Endpoint == nil || len(h.AllowedIPs) != len(p.AllowedIPs) {
		return false
	}
	if ap := h.Endpoint.AddrPort(); netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != p.Endpoint {
		return false
	}
	want := map[netip.Prefix]bool{}
	for _, a := range p.AllowedIPs {
		want[a.Masked()] = true
	}
	for _, n := range h.AllowedIPs {
		ip, ok := netip.AddrFromSlice(n.IP)
		ones, _ := n.Mask.Size()
		if !ok || !want[netip.PrefixFrom(ip.Unmap(), ones).Masked()] {
			return false
		}
	}
	return true
}

// syncAddr leaves addr (a /32) as the device's only IPv4 address.
func (d *Dataplane) syncAddr(link netlink.Link, addr netip.Addr) error {
	have, err := d.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("%s addresses: %w", WireGuardDevice, err)
	}
	for _, a := range have {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != addr {
			if err := d.h.AddrDel(link, &a); err != nil {
				return fmt.Errorf("%s: remove %s: %w", WireGuardDevice, a.IPNet, err)
			}
		}
	}
	if addr.IsValid() {
		if err := d.h.AddrReplace(link, &netlink.Addr{IPNet: hostNet(addr)}); err != nil {
			return fmt.Errorf("%s address %s: %w", WireGuardDevice, addr, err)
		}
	}
	return nil
}

// WireGuard reads wireguard.tabby's key and peers; ok is false when
// there is no such device.
func (d *Dataplane) WireGuard() (dev *wgtypes.Device, ok bool, err error) {
	if d.LinkIndex(WireGuardDevice) == 0 {
		return nil, false, nil
	}
	c, err := d.wgClient()
	if err != nil {
		return nil, false, err
	}
	dev, err = c.Device(WireGuardDevice)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", WireGuardDevice, err)
	}
	return dev, true, nil
}

// ClearWireGuard removes wireguard.tabby and tabby's routes over it;
// nothing to remove is not an error.
func (d *Dataplane) ClearWireGuard() error {
	return errors.Join(d.table.Sync(KindWireGuard, nil), d.DeleteLink(WireGuardDevice))
}
