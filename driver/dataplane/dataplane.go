// Package dataplane programs the host side of tabby's Calico-style L3
// endpoints through netlink: veth pairs, proxy ARP, per-endpoint /32 routes
// and blackhole routes for the blocks the host owns, every route tagged with
// tabby's own protocol number. It never switches the daemon thread's
// namespace: all work goes through a netlink handle bound to one namespace.
package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteProtocol tags every route tabby installs (`ip route` shows "proto 77"),
// so reconciliation can tell them from everyone else's.
const RouteProtocol netlink.RouteProtocol = 77

// HostIfPrefix starts the name of every host-side interface.
const HostIfPrefix = "cali"

// Dataplane is bound to one network namespace.
type Dataplane struct {
	h *netlink.Handle
	// failAfterLink, set only by tests, makes SetupEndpoint fail once the
	// veth exists, to prove the undo path.
	failAfterLink error
	// raw carries the requests netlink.Handle has no call for (devconf,
	// neighbour table parameters), opened in the same namespace.
	rawMu sync.Mutex
	raw   *nl.SocketHandle
	// forwardPerLink: forwarding is set on each link (ForwardPerLink).
	forwardPerLink atomic.Bool
	// table writes every tabby route of the main table.
	table *Table
	// nsPath is the namespace bound to ("" for the daemon's own).
	nsPath string
	// wg controls wireguard.tabby (wgctrl's own socket).
	wg wg
}

// New binds to the namespace at nsPath ("" for the daemon's own).
func New(nsPath string) (*Dataplane, error) {
	ns := netns.None()
	if nsPath != "" {
		var err error
		if ns, err = netns.GetFromPath(nsPath); err != nil {
			return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %q: %w", nsPath, err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink socket in %q: %w", nsPath, err)
	}
	d := &Dataplane{h: h, raw: &nl.SocketHandle{Socket: sock}, nsPath: nsPath}
	d.table = newTable(d)
	return d, nil
}

// Table is the one writer of the namespace's tabby routes; the driver and
// BGP claim routes through it.
func (d *Dataplane) Table() *Table { return d.table }

// Close releases the netlink handle.
func (d *Dataplane) Close() {
	d.h.Close()
	d.raw.Close()
	if d.wg.c != nil {
		d.wg.c.Close()
	}
}

// HostIfName is the host side of an endpoint: cali + 11 hex of its ID.
func HostIfName(endpointID string) string { return HostIfPrefix + short(endpointID) }

// TempIfName is the container side before Docker moves and renames it.
func TempIfName(endpointID string) string { return "tmp" + short(endpointID) }

func short(id string) string {
	if len(id) > 11 {
		return id[:11]
	}
	return id
}

// IsHostIf reports whether name looks like one of tabby's host interfaces.
func IsHostIf(name string) bool {
	return strings.HasPrefix(name, HostIfPrefix) && len(name) == len(HostIfPrefix)+11
}

// GatewayV6 is the IPv6 gateway of every container: a link-local address
// on the host side of each veth (link-local addresses are per link, so every
// veth carries the same one). The host then answers neighbour solicitations
// for it itself; proxy NDP would need a sysctl that a managed plugin cannot
// write (IPv6 devconf is not settable over netlink).
var GatewayV6 = netip.MustParsePrefix("fe80::1/64")

// Endpoint is what the host needs to know of one container interface.
type Endpoint struct {
	HostIf string
	TempIf string
	IPv4   netip.Addr // invalid for IPv6-only endpoints
	IPv6   netip.Addr // invalid for IPv4-only endpoints
	MTU    int
}

// SetupEndpoint creates the veth pair, turns on proxy ARP on the host side
// and routes the address to it. On any failure it removes what it made.
func (d *Dataplane) SetupEndpoint(ep Endpoint) (err error) {
	// IPv4 is invalid on an IPv6-only network; what is given must be of its family.
	if (ep.IPv4.IsValid() && !ep.IPv4.Is4()) || (ep.IPv6.IsValid() && !ep.IPv6.Is6()) || (!ep.IPv4.IsValid() && !ep.IPv6.IsValid()) {
		return fmt.Errorf("endpoint %s: addresses %q and %q are not an IPv4 and an IPv6 address", ep.HostIf, ep.IPv4, ep.IPv6)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ep.HostIf
	attrs.MTU = ep.MTU
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: ep.TempIf, PeerMTU: uint32(max(ep.MTU, 0))}
	if err := d.h.LinkAdd(veth); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s: %w", ep.HostIf, err)
		}
		// A leftover of an interrupted call: start again from nothing.
		if err := d.DeleteLink(ep.HostIf); err != nil {
			return err
		}
		if err := d.h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", ep.HostIf, err)
		}
	}
	defer func() {
		if err != nil {
			_ = d.DeleteLink(ep.HostIf)
		}
	}()
	if d.failAfterLink != nil {
		return d.failAfterLink
	}
	host, err := d.h.LinkByName(ep.HostIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", ep.HostIf, err)
	}
	if err := d.EnableProxyARP(host.Attrs().Index); err != nil {
		return fmt.Errorf("proxy ARP on %s: %w", ep.HostIf, err)
	}
	if err := d.h.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", ep.HostIf, err)
	}
	return d.RouteEndpoint(host, ep.IPv4, ep.IPv6)
}

// RouteEndpoint claims `IP dev caliX scope link proto 77` for each of
// the endpoint's addresses and, for IPv6, puts the gateway address on caliX.
func (d *Dataplane) RouteEndpoint(host netlink.Link, ips ...netip.Addr) error {
	var rs []Route
	for _, ip := range ips {
		if !ip.IsValid() {
			continue
		}
		if ip.Is6() {
			if err := d.gatewayV6(host); err != nil {
				return err
			}
		}
		rs = append(rs, Route{Kind: KindEndpoint, Dst: netip.PrefixFrom(ip, ip.BitLen()), Link: host.Attrs().Index})
	}
	return d.table.Set(rs...)
}

// RepairEndpoint restores proxy ARP, the gateway address and the routes
// of an existing host-side interface (after a restart).
func (d *Dataplane) RepairEndpoint(name string, ips ...netip.Addr) error {
	host, err := d.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := d.EnableProxyARP(host.Attrs().Index); err != nil {
		return fmt.Errorf("proxy ARP on %s: %w", name, err)
	}
	return d.RouteEndpoint(host, ips...)
}

// gatewayV6 puts fe80::1 on a host-side interface, without duplicate
// address detection (it is meant to be on every veth).
func (d *Dataplane) gatewayV6(host netlink.Link) error {
	a := &netlink.Addr{IPNet: prefixNet(GatewayV6), Flags: unix.IFA_F_NODAD}
	if err := d.h.AddrReplace(host, a); err != nil {
		if errors.Is(err, unix.EACCES) {
			return fmt.Errorf("IPv6 gateway on %s: IPv6 is disabled on the host (net.ipv6.conf.*.disable_ipv6=1): %w", host.Attrs().Name, err)
		}
		return fmt.Errorf("IPv6 gateway on %s: %w", host.Attrs().Name, err)
	}
	return nil
}

// DeleteLink removes a link by name; a missing link is fine. Deleting the
// host side of a veth removes its peer and its routes with it, and the
// table lets go of them.
func (d *Dataplane) DeleteLink(name string) error {
	l, err := d.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := d.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return d.table.forgetLink(l.Attrs().Index)
}

// LinkIndex returns the index of a link, or 0 when it does not exist.
func (d *Dataplane) LinkIndex(name string) int {
	l, err := d.h.LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}

// HostLinks lists tabby's host-side interfaces present in the namespace.
func (d *Dataplane) HostLinks() ([]string, error) {
	links, err := d.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if IsHostIf(l.Attrs().Name) && l.Type() == "veth" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// kroute is what the table needs of one of tabby's routes in the kernel:
// a tenth of a netlink.Route, which matters when 10,000 of them are listed
// every 5 s.
type kroute struct {
	dst       netip.Prefix
	gw        netip.Addr // invalid: none
	link      int
	blackhole bool
}

// tabbyRoutes lists the IPv4 and IPv6 routes of the main table that carry
// tabby's tag, compactly, one route at a time.
func (d *Dataplane) tabbyRoutes() ([]kroute, error) {
	var out []kroute
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	err := d.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
		if dst, ok := prefixOf(r); ok {
			gw, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, kroute{dst: dst, gw: gw.Unmap(), link: r.LinkIndex, blackhole: r.Type == unix.RTN_BLACKHOLE})
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return out, nil
}

// eachMainRoute passes every route of the main table, IPv4 and IPv6, to
// fn, one at a time (a slice of 10,000 netlink.Routes is some 9 MB).
func (d *Dataplane) eachMainRoute(fn func(netlink.Route)) error {
	err := d.h.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE,
		func(r netlink.Route) bool { fn(r); return true })
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	return nil
}

// IPv4 devconf indexes (include/uapi/linux/ip.h).
const (
	devconfForwarding = 1
	devconfProxyARP   = 3
)

// Neighbour table attributes (include/uapi/linux/neighbour.h); x/sys/unix
// does not carry them.
const (
	ndtaName        = 1
	ndtaParms       = 6
	ndtpaIfindex    = 1
	ndtpaProxyDelay = 13
)

// EnableProxyARP sets proxy_arp=1 and proxy_delay=0 on a link through
// netlink rather than /proc/sys, which is read-only inside a managed plugin.
func (d *Dataplane) EnableProxyARP(index int) error {
	if err := d.setDevconf(index, devconfProxyARP, 1); err != nil {
		return fmt.Errorf("proxy_arp: %w", err)
	}
	if d.forwardPerLink.Load() {
		if err := d.setDevconf(index, devconfForwarding, 1); err != nil {
			return fmt.Errorf("forwarding: %w", err)
		}
	}
	// proxy_delay: RTM_SETNEIGHTBL on the arp_cache parms of this link.
	req := nl.NewNetlinkRequest(unix.RTM_SETNEIGHTBL, unix.NLM_F_ACK)
	req.AddData(&ndtmsg{family: unix.AF_INET})
	req.AddData(nl.NewRtAttr(ndtaName, nl.ZeroTerminated("arp_cache")))
	parms := nl.NewRtAttr(ndtaParms, nil)
	parms.AddRtAttr(ndtpaIfindex, nl.Uint32Attr(uint32(index)))
	parms.AddRtAttr(ndtpaProxyDelay, nl.Uint64Attr(0))
	req.AddData(parms)
	if err := d.exec(req); err != nil {
		return fmt.Errorf("proxy_delay: %w", err)
	}
	return nil
}

// setDevconf sets one IPv4 devconf value of a link: RTM_SETLINK with
// IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF.
func (d *Dataplane) setDevconf(index, id int, value uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	conf := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(id, nl.Uint32Attr(value))
	req.AddData(spec)
	return d.exec(req)
}

// ForwardPerLink turns IPv4 forwarding on link by link, over netlink, for
// a host whose net.ipv4.ip_forward is off and whose /proc/sys tabby cannot
// write (a managed plugin beside Docker 29's nftables backend, which does
// not turn it on): the kernel forwards a packet when the link it came in on
// forwards. Every link now, every endpoint's veth from now on; call again
// to cover links made since (tunnels, new uplinks).
func (d *Dataplane) ForwardPerLink() error {
	d.forwardPerLink.Store(true)
	links, err := d.h.LinkList()
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := d.setDevconf(l.Attrs().Index, devconfForwarding, 1); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("forwarding on %s: %w", l.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// ForwardsPerLink reports whether ForwardPerLink was called.
func (d *Dataplane) ForwardsPerLink() bool { return d.forwardPerLink.Load() }

// exec sends a raw request on the handle's namespace.
func (d *Dataplane) exec(req *nl.NetlinkRequest) error {
	d.rawMu.Lock()
	defer d.rawMu.Unlock()
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: d.raw}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

type ndtmsg struct{ family uint8 }

func (m *ndtmsg) Len() int { return 4 }
func (m *ndtmsg) Serialize() []byte {
	return []byte{m.family, 0, 0, 0}
}

func hostNet(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ListVia returns the destinations of tabby's gateway routes, but for
// those over vxlan.tabby, tunl0 or wireguard.tabby, which belong to the
// tunnel dataplanes.
func (d *Dataplane) ListVia() (map[netip.Prefix]netip.Addr, error) {
	rs, err := d.tabbyRoutes()
	if err != nil {
		return nil, err
	}
	tun := d.tunnelKinds()
	out := map[netip.Prefix]netip.Addr{}
	for _, r := range rs {
		if r.gw.IsValid() && tun[r.link] == 0 {
			out[r.dst] = r.gw
		}
	}
	return out, nil
}

// tunnelKinds maps the tunnel devices present to the kind of their routes.
func (d *Dataplane) tunnelKinds() map[int]Kind {
	out := map[int]Kind{}
	for name, k := range map[string]Kind{VXLANDevice: KindVXLAN, IPIPDevice: KindIPIP, WireGuardDevice: KindWireGuard} {
		if i := d.LinkIndex(name); i != 0 {
			out[i] = k
		}
	}
	return out
}

// Protected lists the main table's routes that a route learned over BGP
// must not cover or replace (noCover: its blocks' blackholes, connected
// subnets, the default route, other daemons' routes) or replace (noReplace:
// its endpoints' routes, which a block of another host legitimately covers
// when an address of it was borrowed). tabby's own gateway routes are in
// neither. A default route reads as 0.0.0.0/0 (::/0).
func (d *Dataplane) Protected() (noCover, noReplace []netip.Prefix, err error) {
	wgLink := d.LinkIndex(WireGuardDevice)
	err = d.eachMainRoute(func(r netlink.Route) {
		k, ok := keyOf(r)
		switch {
		case !ok || (r.Protocol == RouteProtocol && (r.Gw != nil || (wgLink != 0 && r.LinkIndex == wgLink))):
		case r.Protocol == RouteProtocol && r.Type != unix.RTN_BLACKHOLE && k.dst.IsSingleIP():
			noReplace = append(noReplace, k.dst)
		default:
			noCover = append(noCover, k.dst)
		}
	})
	return noCover, noReplace, err
}
