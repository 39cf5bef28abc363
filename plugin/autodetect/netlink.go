package autodetect

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Interfaces reads the host's interfaces and addresses in index order.
func Interfaces() ([]Iface, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []Iface
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		i := Iface{Name: l.Attrs().Name}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			ones, _ := a.Mask.Size()
			if ok {
				i.Addrs = append(i.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		out = append(out, i)
	}
	return out, nil
}

// KernelRoute asks the kernel which source address reaches dest.
func KernelRoute(dest netip.Addr) (netip.Addr, error) {
	rs, err := netlink.RouteGet(net.IP(dest.AsSlice()))
	if err != nil {
		return netip.Addr{}, err
	}
	for _, r := range rs {
		if src, ok := netip.AddrFromSlice(r.Src); ok {
			return src.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no source address towards %s", dest)
}

// Host finds this host's address of family (4 or 6) by method, or parses a
// fixed one; a fixed address takes its prefix length from the interface that
// holds it.
func Host(ip, method string, family int) (Result, error) {
	ifaces, err := Interfaces()
	if err != nil {
		return Result{}, err
	}
	if ip != "" && ip != "autodetect" {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Is4() != (family == 4) {
			if family == 6 {
				return Result{}, fmt.Errorf("IP6 %q is not an IPv6 address", ip)
			}
			return Result{}, fmt.Errorf("IP %q is not an IPv4 address", ip)
		}
		for _, i := range ifaces {
			for _, p := range i.Addrs {
				if p.Addr() == a {
					return Result{Addr: p, Iface: i.Name}, nil
				}
			}
		}
		return Result{Addr: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	return Detect(method, family, ifaces, KernelRoute)
}

// MTU returns an interface's MTU, or 0 when it cannot be read.
func MTU(iface string) int {
	if iface == "" {
		return 0
	}
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return 0
	}
	return l.Attrs().MTU
}
