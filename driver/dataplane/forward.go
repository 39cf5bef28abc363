package dataplane

import (
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ForwardChain holds tabby's accept rules, jumped to from FORWARD, so routed
// container traffic passes Docker's `FORWARD DROP` policy.
const ForwardChain = "TABBY-FORWARD"

var (
	jumpRule   = []string{"-m", "comment", "--comment", "tabby: container traffic", "-j", ForwardChain}
	acceptRule = [][]string{
		{"-i", HostIfPrefix + "+", "-m", "comment", "--comment", "tabby: from containers", "-j", "ACCEPT"},
		{"-o", HostIfPrefix + "+", "-m", "comment", "--comment", "tabby: to containers", "-j", "ACCEPT"},
	}
)

// Forwarding owns the host's forwarding switch and tabby's iptables rules.
type Forwarding struct {
	ipt         *iptables.IPTables
	ipForwardAt string
}

// NewForwarding uses the iptables binary at path ("" to find it on PATH);
// procRoot is where /proc/sys lives ("" for /proc).
func NewForwarding(path, procRoot string) (*Forwarding, error) {
	var ipt *iptables.IPTables
	var err error
	if path != "" {
		ipt, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10), iptables.Path(path))
	} else {
		ipt, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(10))
	}
	if err != nil {
		return nil, fmt.Errorf("iptables: %w; install the iptables package", err)
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Forwarding{ipt: ipt, ipForwardAt: procRoot + "/sys/net/ipv4/ip_forward"}, nil
}

// Ensure turns on IPv4 forwarding and installs the accept rules. It never
// flushes the chain: it adds what is missing and deletes what is stale, so a
// daemon restart leaves no moment in which Docker's FORWARD DROP applies to
// container traffic.
func (f *Forwarding) Ensure() error {
	if err := f.enableIPForward(); err != nil {
		return err
	}
	ok, err := f.ipt.ChainExists("filter", ForwardChain)
	if err != nil {
		return fmt.Errorf("iptables chain %s: %w", ForwardChain, err)
	}
	if !ok {
		if err := f.ipt.NewChain("filter", ForwardChain); err != nil {
			return fmt.Errorf("iptables chain %s: %w", ForwardChain, err)
		}
	}
	for _, r := range acceptRule {
		if err := f.ipt.AppendUnique("filter", ForwardChain, r...); err != nil {
			return fmt.Errorf("iptables rule in %s: %w", ForwardChain, err)
		}
	}
	if err := f.deleteStale(); err != nil {
		return err
	}
	if err := f.ipt.InsertUnique("filter", "FORWARD", 1, jumpRule...); err != nil {
		return fmt.Errorf("iptables jump from FORWARD to %s: %w", ForwardChain, err)
	}
	return nil
}

// deleteStale removes rules of tabby's chain that Ensure would not add
// (left by an older version).
func (f *Forwarding) deleteStale() error {
	have, err := f.ipt.List("filter", ForwardChain)
	if err != nil {
		return fmt.Errorf("iptables list %s: %w", ForwardChain, err)
	}
	want := map[string]bool{}
	for _, r := range acceptRule {
		line := "-A " + ForwardChain
		for _, a := range r {
			if strings.Contains(a, " ") {
				a = `"` + a + `"`
			}
			line += " " + a
		}
		want[line] = true
	}
	for _, line := range have {
		if !strings.HasPrefix(line, "-A ") || want[line] {
			continue
		}
		args := strings.Fields(strings.TrimPrefix(line, "-A "+ForwardChain+" "))
		if err := f.ipt.Delete("filter", ForwardChain, args...); err != nil {
			return fmt.Errorf("iptables: remove stale rule %q: %w", line, err)
		}
	}
	return nil
}

// Remove deletes tabby's rules; rules already gone are fine.
func (f *Forwarding) Remove() error {
	if err := f.removeNAT(); err != nil {
		return err
	}
	ok, err := f.ipt.ChainExists("filter", ForwardChain)
	if err != nil || !ok {
		return err // without the chain there can be no jump to it
	}
	if err := f.ipt.DeleteIfExists("filter", "FORWARD", jumpRule...); err != nil {
		return fmt.Errorf("iptables: remove jump to %s: %w", ForwardChain, err)
	}
	if err := f.ipt.ClearAndDeleteChain("filter", ForwardChain); err != nil {
		return fmt.Errorf("iptables: delete %s: %w", ForwardChain, err)
	}
	return nil
}

// enableIPForward writes ip_forward=1; where /proc/sys is read-only (inside
// a managed plugin) it accepts a host that already forwards.
func (f *Forwarding) enableIPForward() error {
	werr := os.WriteFile(f.ipForwardAt, []byte("1\n"), 0o644)
	if werr == nil {
		return nil
	}
	b, err := os.ReadFile(f.ipForwardAt)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return fmt.Errorf("IPv4 forwarding is off and tabby cannot turn it on (%v): run 'sysctl -w net.ipv4.ip_forward=1' on the host", werr)
}
