package dataplane

import (
	"fmt"
	"net/netip"

	"github.com/coreos/go-iptables/iptables"
)

// NATChain masquerades traffic from pools with natOutgoing to destinations
// outside every pool; it is jumped to from the nat table's POSTROUTING.
const NATChain = "TABBY-NAT-OUTGOING"

var natJump = []string{"-m", "comment", "--comment", "tabby: outgoing NAT", "-j", NATChain}

// NATPool is what outgoing NAT needs of a pool.
type NATPool struct {
	CIDR netip.Prefix
	NAT  bool
}

// natRules is the chain's content for one family: for each NAT pool, traffic
// to any pool returns untouched (pool to pool is routed, never masqueraded),
// the rest is masqueraded. Pure, so the rule set is tested without a kernel.
func natRules(pools []NATPool, v6 bool) [][]string {
	var out [][]string
	for _, p := range pools {
		if !p.NAT || p.CIDR.Addr().Is6() != v6 {
			continue
		}
		for _, q := range pools {
			if q.CIDR.Addr().Is6() == v6 {
				out = append(out, []string{"-s", p.CIDR.String(), "-d", q.CIDR.String(), "-j", "RETURN"})
			}
		}
		out = append(out, []string{"-s", p.CIDR.String(), "-j", "MASQUERADE"})
	}
	return out
}

// SyncNAT rewrites the outgoing NAT chain of each family for pools and
// makes sure POSTROUTING jumps to it.
func (f *Forwarding) SyncNAT(pools []NATPool) error {
	f.natMu.Lock()
	defer f.natMu.Unlock()
	if err := f.syncNATLocked(pools); err != nil {
		return err
	}
	f.natPools, f.natSynced = append([]NATPool(nil), pools...), true
	return nil
}

func (f *Forwarding) syncNATLocked(pools []NATPool) error {
	for _, ipt := range f.tables() {
		if err := syncNAT(ipt, natRules(pools, ipt.Proto() == iptables.ProtocolIPv6)); err != nil {
			return err
		}
	}
	return nil
}

func syncNAT(ipt *iptables.IPTables, want [][]string) error {
	if ok, err := ipt.ChainExists("nat", NATChain); err == nil && ok {
		if have, err := ipt.List("nat", NATChain); err == nil && sameRules(have, want) {
			return ipt.InsertUnique("nat", "POSTROUTING", 1, natJump...)
		}
	}
	if err := ipt.ClearChain("nat", NATChain); err != nil {
		return fmt.Errorf("iptables chain %s: %w", NATChain, err)
	}
	for _, r := range want {
		if err := ipt.Append("nat", NATChain, r...); err != nil {
			return fmt.Errorf("iptables rule in %s: %w", NATChain, err)
		}
	}
	if err := ipt.InsertUnique("nat", "POSTROUTING", 1, natJump...); err != nil {
		return fmt.Errorf("iptables jump from POSTROUTING to %s: %w", NATChain, err)
	}
	return nil
}

// sameRules compares `iptables -S CHAIN` output (first line is -N CHAIN)
// with the wanted rules, so an unchanged pool set costs no rewrite.
func sameRules(have []string, want [][]string) bool {
	if len(have) != len(want)+1 {
		return false
	}
	for i, r := range want {
		line := "-A " + NATChain
		for _, a := range r {
			line += " " + a
		}
		if have[i+1] != line {
			return false
		}
	}
	return true
}

// removeNAT deletes the chain and its jump; gone already is fine.
func removeNAT(ipt *iptables.IPTables) error {
	ok, err := ipt.ChainExists("nat", NATChain)
	if err != nil || !ok {
		return err
	}
	if err := ipt.DeleteIfExists("nat", "POSTROUTING", natJump...); err != nil {
		return fmt.Errorf("iptables: remove jump to %s: %w", NATChain, err)
	}
	return ipt.ClearAndDeleteChain("nat", NATChain)
}
