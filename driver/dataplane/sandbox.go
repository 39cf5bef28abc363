package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SandboxTable is the routing table, inside a container's namespace, that
// holds the --subnet routes Docker's own check would otherwise trip over.
// Docker refuses to give an interface an address that a main-table route
// covers ("conflicts with existing route"), and reads no other table, so a
// subnet route moved here, found by a rule just before main, routes as
// before and no longer blocks the next network's address.
const SandboxTable = 77

// sandboxRulePriority puts SandboxTable's lookup just before main (32766).
const sandboxRulePriority = 32765

// OpenSandbox opens a container's network namespace from Docker's sandbox
// key, trying each path in turn: the key itself, then (where dockerd runs in
// a mount namespace of its own, or tabby in a plugin's) the same path seen
// through another process's root. A file that is not a namespace (the key's
// mount is not visible here) is skipped.
func OpenSandbox(paths ...string) (netns.NsHandle, error) {
	var errs []error
	for _, p := range paths {
		ns, err := netns.GetFromPath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(ns), &st); err != nil || st.Type != unix.NSFS_MAGIC {
			ns.Close()
			errs = append(errs, fmt.Errorf("%s is not a network namespace here", p))
			continue
		}
		return ns, nil
	}
	return netns.None(), fmt.Errorf("sandbox: %w", errors.Join(errs...))
}

// SandboxExists reports whether any of the paths exists.
func SandboxExists(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// SetSubnetRouteAside moves the container's route `subnet via gw` from the
// main table to SandboxTable and makes sure the rule that reads that table
// is there. Nothing to move (already moved, or the route was never there)
// is fine.
func SetSubnetRouteAside(ns netns.NsHandle, subnet netip.Prefix, gw netip.Addr) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in sandbox: %w", err)
	}
	defer h.Close()
	family := netlink.FAMILY_V4
	if subnet.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(family, &netlink.Route{Dst: prefixNet(subnet), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("sandbox routes: %w", err)
	}
	if err := ensureSandboxRule(h, family); err != nil {
		return err
	}
	for _, r := range routes {
		if a, ok := netip.AddrFromSlice(r.Gw); !ok || a.Unmap() != gw {
			continue
		}
		// Not onlink: the kernel checks an onlink gateway against the
		// route's own table, where 169.254.1.N has no route.
		aside := netlink.Route{LinkIndex: r.LinkIndex, Dst: r.Dst, Gw: r.Gw, Protocol: r.Protocol, Table: SandboxTable}
		if err := h.RouteReplace(&aside); err != nil {
			return fmt.Errorf("sandbox route %s via %s into table %d: %w", subnet, gw, SandboxTable, err)
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sandbox route %s via %s out of main: %w", subnet, gw, err)
		}
	}
	return nil
}

func ensureSandboxRule(h *netlink.Handle, family int) error {
	rules, err := h.RuleList(family)
	if err != nil {
		return fmt.Errorf("sandbox rules: %w", err)
	}
	for _, r := range rules {
		if r.Table == SandboxTable {
			return nil
		}
	}
	rule := netlink.NewRule()
	rule.Family = family
	rule.Table = SandboxTable
	rule.Priority = sandboxRulePriority
	if err := h.RuleAdd(rule); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("sandbox rule for table %d: %w", SandboxTable, err)
	}
	return nil
}
