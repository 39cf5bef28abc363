package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

// Enforcer swaps compiled rule sets into the kernel with the nft binary;
// one `nft -f` file is one transaction, so the table is never half-built.
type Enforcer struct {
	// nft is the command that runs nft (a prefix such as `ip netns exec NS
	// nft` in tests).
	nft  []string
	mu   sync.Mutex
	last string
}

// NewEnforcer runs nft from PATH, or the given command.
func NewEnforcer(cmd ...string) (*Enforcer, error) {
	if len(cmd) == 0 {
		path, err := exec.LookPath("nft")
		if err != nil {
			return nil, fmt.Errorf("policy needs the nft command: %w; install the nftables package", err)
		}
		cmd = []string{path}
	}
	return &Enforcer{nft: cmd}, nil
}

func (e *Enforcer) run(stdin string, args ...string) error {
	cmd := exec.Command(e.nft[0], append(append([]string{}, e.nft[1:]...), args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Apply installs script (from Compile) unless it is what is installed.
func (e *Enforcer) Apply(script string) (changed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if script == e.last {
		return false, nil
	}
	if err := e.run(script, "-f", "-"); err != nil {
		e.last = ""
		return false, err
	}
	e.last = script
	return true, nil
}

// Repair reinstalls the last applied rule set when its table is gone (nft
// flush ruleset, nft delete table inet tabby), reading nothing from etcd;
// it reports whether it did. One `nft list tables` when nothing is missing.
func (e *Enforcer) Repair() (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == "" {
		return false, nil
	}
	cmd := exec.Command(e.nft[0], append(append([]string{}, e.nft[1:]...), "list", "tables")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("nft list tables: %w: %s", err, strings.TrimSpace(string(out)))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "table inet "+Table {
			return false, nil
		}
	}
	if err := e.run(e.last, "-f", "-"); err != nil {
		return false, err
	}
	return true, nil
}

// Remove deletes tabby's table; a missing table is fine.
func (e *Enforcer) Remove() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = ""
	err := e.run(fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", Table, Table), "-f", "-")
	if err != nil && !errors.Is(err, exec.ErrNotFound) {
		return err
	}
	return nil
}
