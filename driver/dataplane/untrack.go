package dataplane

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// UntrackTable is the table tabby puts in a container's namespace.
const UntrackTable = "tabby"

// UntrackSandbox exempts a container's traffic from connection tracking
// in its own namespace, all but what crosses its loopback. Docker gives
// every container on a user-defined network its embedded DNS with nat
// rules in the container's namespace, which switch on conntrack there for
// every connection; only the DNS flows to 127.0.0.11 need it, and those
// stay on lo. Policy, published ports and NAT are the host's, tracked in
// the host's namespace as before. One nftables transaction, through a
// netlink socket opened in ns: it replaces an earlier copy.
func UntrackSandbox(ns netns.NsHandle) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables in the container's namespace: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: UntrackTable}
	// Adding an existing table is no error; deleting it in the same
	// transaction then drops the earlier copy before the new one.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
		key  expr.MetaKey
	}{{"prerouting", nftables.ChainHookPrerouting, expr.MetaKeyIIFNAME}, {"output", nftables.ChainHookOutput, expr.MetaKeyOIFNAME}} {
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: h.hook, Priority: nftables.ChainPriorityRaw, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: h.key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("lo")},
			&expr.Notrack{},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("untrack the container's traffic: %w", err)
	}
	return nil
}

// SandboxUntracked reports whether ns holds the untrack table.
func SandboxUntracked(ns netns.NsHandle) (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if t.Name == UntrackTable {
			return true, nil
		}
	}
	return false, nil
}

// ifname is an interface name as nftables compares it: padded to IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
