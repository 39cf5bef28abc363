package dataplane

import (
	"fmt"
	"net/netip"
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

// natRules is the chain's content: for each NAT pool, traffic to any pool
// returns untouched (pool to pool is routed, never masqueraded), the rest is
// masqueraded. Pure, so the rule set is tested without a kernel.
func natRules(pools []NATPool) [][]string {
	var out [][]string
	for _, p := range pools {
		if !p.NAT || !p.CIDR.Addr().Is4() {
			continue
		}
		for _, q := range pools {
			if q.CIDR.Addr().Is4() {
				out = append(out, []string{"-s", p.CIDR.String(), "-d", q.CIDR.String(), "-j", "RETURN"})
			}
		}
		out = append(out, []string{"-s", p.CIDR.String(), "-j", "MASQUERADE"})
	}
	return out
}

// SyncNAT rewrites the outgoing NAT chain for pools and makes sure
// POSTROUTING jumps to it.
func (f *Forwarding) SyncNAT(pools []NATPool) error {
	want := natRules(pools)
	if ok, err := f.ipt.ChainExists("nat", NATChain); err == nil && ok {
		if have, err := f.ipt.List("nat", NATChain); err == nil && sameRules(have, want) {
			return f.ipt.InsertUnique("nat", "POSTROUTING", 1, natJump...)
		}
	}
	if err := f.ipt.ClearChain("nat", NATChain); err != nil {
		return fmt.Errorf("iptables chain %s: %w", NATChain, err)
	}
	for _, r := range want {
		if err := f.ipt.Append("nat", NATChain, r...); err != nil {
			return fmt.Errorf("iptables rule in %s: %w", NATChain, err)
		}
	}
	if err := f.ipt.InsertUnique("nat", "POSTROUTING", 1, natJump...); err != nil {
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
func (f *Forwarding) removeNAT() error {
	ok, err := f.ipt.ChainExists("nat", NATChain)
	if err != nil || !ok {
		return err
	}
	if err := f.ipt.DeleteIfExists("nat", "POSTROUTING", natJump...); err != nil {
		return fmt.Errorf("iptables: remove jump to %s: %w", NATChain, err)
	}
	return f.ipt.ClearAndDeleteChain("nat", NATChain)
}
