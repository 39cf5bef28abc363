package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ErrNoIPIP means the kernel cannot make IPIP tunnels.
var ErrNoIPIP = errors.New("IPIP needs the kernel's ipip module, which this kernel does not have")

// ipipProbe is a throwaway tunnel name (15 characters at most).
const ipipProbe = "tabbyipipprobe"

// IPIPSupported reports whether this kernel can carry IPIP: tunl0 exists
// once the ipip module is loaded, and creating a tunnel loads it when it is
// available; the probe tunnel is removed at once.
func (d *Dataplane) IPIPSupported() error {
	if _, err := d.h.LinkByName("tunl0"); err == nil {
		return nil
	}
	// Endpoints of its own: a tunnel without them is the fallback tunl0's
	// twin, refused (EEXIST) once the request has loaded the module.
	probe := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: ipipProbe},
		Local: net.IPv4(192, 0, 2, 1), Remote: net.IPv4(192, 0, 2, 2)}
	if err := d.h.LinkAdd(probe); err != nil {
		if _, err2 := d.h.LinkByName("tunl0"); err2 == nil {
			return nil // loaded by this very request
		}
		return fmt.Errorf("%w (%v): use vxlanMode instead of ipipMode, or load the ipip module", ErrNoIPIP, err)
	}
	return d.DeleteLink(ipipProbe)
}

// IPIPDevice is the kernel's fallback IPIP tunnel, present in every
// namespace once the ipip module is loaded.
const IPIPDevice = "tunl0"

// EnsureIPIP brings tunl0 up with this host's tunnel address and MTU and
// returns its index. Creating an ipip tunnel loads the module, which makes
// tunl0 appear.
func (d *Dataplane) EnsureIPIP(tunnelIP netip.Addr, mtu int) (int, error) {
	if err := d.IPIPSupported(); err != nil {
		return 0, err
	}
	link, err := d.h.LinkByName(IPIPDevice)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", IPIPDevice, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(link, mtu); err != nil {
			return 0, fmt.Errorf("%s mtu: %w", IPIPDevice, err)
		}
	}
	if err := d.h.AddrReplace(link, &netlink.Addr{IPNet: hostNet(tunnelIP)}); err != nil {
		return 0, fmt.Errorf("%s address %s: %w", IPIPDevice, tunnelIP, err)
	}
	if err := d.h.LinkSetUp(link); err != nil {
		return 0, fmt.Errorf("%s up: %w", IPIPDevice, err)
	}
	return link.Attrs().Index, nil
}

// ClearIPIP removes tabby's routes and addresses from tunl0 (the device
// itself belongs to the kernel); without tunl0 there is nothing to do.
func (d *Dataplane) ClearIPIP() error {
	if err := d.table.Sync(KindIPIP, nil); err != nil {
		return err
	}
	link, err := d.h.LinkByName(IPIPDevice)
	if err != nil {
		return nil
	}
	addrs, err := d.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := d.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("%s: remove %s: %w", IPIPDevice, a.IPNet, err)
		}
	}
	return nil
}
