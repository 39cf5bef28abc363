package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLAN device settings, as Calico's vxlan.calico.
const (
	VXLANDevice = "vxlan.tabby"
	VXLANVNI    = 4096
	VXLANPort   = 4789
)

// VTEP is one host's tunnel endpoint.
type VTEP struct {
	HostIP   netip.Addr // underlay address the tunnel packets go to
	TunnelIP netip.Addr // address on the other host's vxlan.tabby
	MAC      net.HardwareAddr
}

// EnsureVXLAN creates or updates vxlan.tabby with this host's VTEP.
func (d *Dataplane) EnsureVXLAN(self VTEP, mtu int) (int, error) {
	link, err := d.h.LinkByName(VXLANDevice)
	if err == nil {
		v, ok := link.(*netlink.Vxlan)
		if !ok || v.VxlanId != VXLANVNI || !v.SrcAddr.Equal(net.IP(self.HostIP.AsSlice())) ||
			v.HardwareAddr.String() != self.MAC.String() {
			if err := d.DeleteLink(VXLANDevice); err != nil {
				return 0, err
			}
			link = nil
		}
	}
	if link == nil || err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.HardwareAddr = VXLANDevice, mtu, self.MAC
		v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: VXLANVNI, Port: VXLANPort, Learning: false,
			SrcAddr: net.IP(self.HostIP.AsSlice())}
		if err := d.h.LinkAdd(v); err != nil {
			if errors.Is(err, unix.EEXIST) {
				// No link of that name: another VXLAN device holds the VNI
				// on the port. Docker's swarm overlay numbers its networks
				// from VNI 4096 on UDP 4789 too.
				return 0, fmt.Errorf("create %s: VNI %d on UDP %d is taken on this host by another VXLAN device "+
					"(a Docker swarm overlay network uses the same by default): move the swarm's VXLAN port with "+
					"`docker swarm init --data-path-port 4790`: %w", VXLANDevice, VXLANVNI, VXLANPort, err)
			}
			return 0, fmt.Errorf("create %s: %w", VXLANDevice, err)
		}
		if link, err = d.h.LinkByName(VXLANDevice); err != nil {
			return 0, err
		}
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(link, mtu); err != nil {
			return 0, fmt.Errorf("%s mtu: %w", VXLANDevice, err)
		}
	}
	addr := &netlink.Addr{IPNet: hostNet(self.TunnelIP)}
	if err := d.h.AddrReplace(link, addr); err != nil {
		return 0, fmt.Errorf("%s address %s: %w", VXLANDevice, self.TunnelIP, err)
	}
	if err := d.h.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("%s up: %w", VXLANDevice, err)
	}
	return link.Attrs().Index, nil
}

// SyncVXLANPeers makes the permanent ARP and FDB entries of vxlan.tabby
// match peers: the other hosts' tunnel MAC for their tunnel address, and
// where to send frames for that MAC.
func (d *Dataplane) SyncVXLANPeers(index int, peers []VTEP) error {
	var errs []error
	want := map[string]VTEP{}
	for _, p := range peers {
		want[p.MAC.String()] = p
		arp := &netlink.Neigh{LinkIndex: index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: net.IP(p.TunnelIP.AsSlice()), HardwareAddr: p.MAC}
		if err := d.h.NeighSet(arp); err != nil {
			errs = append(errs, fmt.Errorf("arp %s: %w", p.TunnelIP, err))
		}
		fdb := &netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(p.HostIP.AsSlice()), HardwareAddr: p.MAC}
		if err := d.h.NeighSet(fdb); err != nil {
			errs = append(errs, fmt.Errorf("fdb %s: %w", p.MAC, err))
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
		have, err := d.h.NeighList(index, fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range have {
			if n.HardwareAddr == nil || n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			if p, ok := want[n.HardwareAddr.String()]; ok && (fam == unix.AF_BRIDGE || n.IP.Equal(net.IP(p.TunnelIP.AsSlice()))) {
				continue
			}
			if err := d.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
