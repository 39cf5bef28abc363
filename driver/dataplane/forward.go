package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// ForwardChain holds tabby's accept rules, jumped to from FORWARD, so routed
// container traffic passes Docker's `FORWARD DROP` policy.
const ForwardChain = "TABBY-FORWARD"

// PublishMark is the connection mark (a bit of it) of connections a host
// forwards to another host's container for a port published everywhere;
// the policy's NAT sets it, and the forwarding chain accepts them.
const PublishMark = 0x00100000

var (
	jumpRule   = []string{"-m", "comment", "--comment", "tabby: container traffic", "-j", ForwardChain}
	acceptRule = [][]string{
		{"-i", HostIfPrefix + "+", "-m", "comment", "--comment", "tabby: from containers", "-j", "ACCEPT"},
		{"-o", HostIfPrefix + "+", "-m", "comment", "--comment", "tabby: to containers", "-j", "ACCEPT"},
		{"-m", "connmark", "--mark", fmt.Sprintf("%#x/%#x", PublishMark, PublishMark), "-m", "comment", "--comment", "tabby: published on every host", "-j", "ACCEPT"},
	}
)

// Forwarding owns the host's forwarding switches and tabby's iptables (and,
// with IPv6, ip6tables) rules.
type Forwarding struct {
	ipt *iptables.IPTables
	// ipt6 is nil when the host takes no part in IPv6.
	ipt6     *iptables.IPTables
	procRoot string
	// natMu serialises NAT syncs (pool changes and Repair); natPools is
	// the last synced set, natSynced whether there was one.
	natMu     sync.Mutex
	natPools  []NATPool
	natSynced bool
}

// NewForwarding uses the iptables binary at path ("" to find it on PATH;
// ip6tables is looked for beside it) and, when ipv6, ip6tables too;
// procRoot is where /proc/sys lives ("" for /proc).
func NewForwarding(path, procRoot string, ipv6 bool) (*Forwarding, error) {
	ipt, err := newIPTables(iptables.ProtocolIPv4, path)
	if err != nil {
		return nil, err
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	f := &Forwarding{ipt: ipt, procRoot: procRoot}
	if ipv6 {
		if path != "" {
			path = filepath.Join(filepath.Dir(path), "ip6tables")
		}
		if f.ipt6, err = newIPTables(iptables.ProtocolIPv6, path); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func newIPTables(proto iptables.Protocol, path string) (*iptables.IPTables, error) {
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(10))
	if path != "" {
		ipt, err = iptables.New(iptables.IPFamily(proto), iptables.Timeout(10), iptables.Path(path))
	}
	if err != nil {
		return nil, fmt.Errorf("iptables: %w; install the iptables package", err)
	}
	return ipt, nil
}

// tables returns the iptables of every family in use.
func (f *Forwarding) tables() []*iptables.IPTables {
	if f.ipt6 != nil {
		return []*iptables.IPTables{f.ipt, f.ipt6}
	}
	return []*iptables.IPTables{f.ipt}
}

// Ensure turns on forwarding and installs the accept rules, for IPv4 and
// (when enabled) IPv6. It never flushes the chain: it adds what is missing
// and deletes what is stale, so a daemon restart leaves no moment in which
// Docker's FORWARD DROP applies to container traffic.
//
// When IPv4 forwarding is off and /proc/sys cannot be written, the rules
// are still installed and the error wraps ErrForwardingOff: the caller may
// forward link by link instead (Dataplane.ForwardPerLink).
func (f *Forwarding) Ensure() error {
	v4 := enableForward(filepath.Join(f.procRoot, "sys/net/ipv4/ip_forward"), "net.ipv4.ip_forward")
	if v4 != nil && !errors.Is(v4, ErrForwardingOff) {
		return v4
	}
	if f.ipt6 != nil {
		// IPv6 has no per-link switch over netlink: off is fatal here.
		if err := enableForward(filepath.Join(f.procRoot, "sys/net/ipv6/conf/all/forwarding"), "net.ipv6.conf.all.forwarding"); err != nil {
			return fmt.Errorf("IPv6: %s", err)
		}
	}
	for _, ipt := range f.tables() {
		if err := ensureChain(ipt); err != nil {
			return err
		}
	}
	return v4
}

// Repair puts back what a flush removed (iptables -F FORWARD, iptables -t
// nat -F POSTROUTING, nft flush ruleset): the forwarding chain and its
// jump, and the NAT chain and its jump as last synced. When nothing is
// missing it costs a few iptables checks and no write.
func (f *Forwarding) Repair() error {
	if err := f.Ensure(); err != nil && !errors.Is(err, ErrForwardingOff) {
		return err
	}
	f.natMu.Lock()
	defer f.natMu.Unlock()
	if !f.natSynced {
		return nil
	}
	return f.syncNATLocked(f.natPools)
}

// ErrForwardingOff: a forwarding switch is off and tabby cannot turn it on.
var ErrForwardingOff = errors.New("forwarding is off and tabby cannot turn it on")

func ensureChain(ipt *iptables.IPTables) error {
	ok, err := ipt.ChainExists("filter", ForwardChain)
	if err != nil {
		return fmt.Errorf("iptables chain %s: %w", ForwardChain, err)
	}
	if !ok {
		if err := ipt.NewChain("filter", ForwardChain); err != nil {
			return fmt.Errorf("iptables chain %s: %w", ForwardChain, err)
		}
	}
	for _, r := range acceptRule {
		if err := ipt.AppendUnique("filter", ForwardChain, r...); err != nil {
			return fmt.Errorf("iptables rule in %s: %w", ForwardChain, err)
		}
	}
	if err := deleteStale(ipt); err != nil {
		return err
	}
	if err := ipt.InsertUnique("filter", "FORWARD", 1, jumpRule...); err != nil {
		return fmt.Errorf("iptables jump from FORWARD to %s: %w", ForwardChain, err)
	}
	return nil
}

// deleteStale removes rules of tabby's chain that Ensure would not add
// (left by an older version).
func deleteStale(ipt *iptables.IPTables) error {
	have, err := ipt.List("filter", ForwardChain)
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
		if err := ipt.Delete("filter", ForwardChain, args...); err != nil {
			return fmt.Errorf("iptables: remove stale rule %q: %w", line, err)
		}
	}
	return nil
}

// Remove deletes tabby's rules of every family; rules already gone are fine.
func (f *Forwarding) Remove() error {
	var errs []error
	for _, ipt := range f.tables() {
		errs = append(errs, removeRules(ipt))
	}
	return errors.Join(errs...)
}

func removeRules(ipt *iptables.IPTables) error {
	if err := removeNAT(ipt); err != nil {
		return err
	}
	ok, err := ipt.ChainExists("filter", ForwardChain)
	if err != nil || !ok {
		return err // without the chain there can be no jump to it
	}
	if err := ipt.DeleteIfExists("filter", "FORWARD", jumpRule...); err != nil {
		return fmt.Errorf("iptables: remove jump to %s: %w", ForwardChain, err)
	}
	if err := ipt.ClearAndDeleteChain("filter", ForwardChain); err != nil {
		return fmt.Errorf("iptables: delete %s: %w", ForwardChain, err)
	}
	return nil
}

// enableForward writes 1 to a forwarding switch; where /proc/sys is
// read-only (inside a managed plugin) it accepts a host that already
// forwards.
func enableForward(path, sysctl string) error {
	werr := os.WriteFile(path, []byte("1\n"), 0o644)
	if werr == nil {
		return nil
	}
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err == nil && strings.TrimSpace(string(b)) == "0" {
		return fmt.Errorf("%w (%v): run 'sysctl -w %s=1' on the host", ErrForwardingOff, werr, sysctl)
	}
	return fmt.Errorf("%s: cannot write (%v) or read (%v) %s: run 'sysctl -w %s=1' on the host", sysctl, werr, err, path, sysctl)
}
