package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"sort"
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
	// lastStructure and lastSets are last split: a script that differs
	// from it only in set elements is applied as element updates.
	lastStructure string
	lastSets      map[string][]string
	full, partial int
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
// When only the sets' members changed (an endpoint came or went anywhere
// in the cluster), it adds and deletes those elements in one transaction
// instead of replacing the table: the kernel's work is the change's.
func (e *Enforcer) Apply(script string) (changed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if script == e.last {
		return false, nil
	}
	structure, sets := splitSets(script)
	if e.last != "" && structure == e.lastStructure {
		if cmd := elementDiff(e.lastSets, sets); cmd != "" && e.run(cmd, "-f", "-") == nil {
			e.last, e.lastSets = script, sets
			e.partial++
			return true, nil
		}
		// The table may have gone meanwhile: all of it, below.
	}
	if err := e.run(script, "-f", "-"); err != nil {
		e.last, e.lastStructure, e.lastSets = "", "", nil
		return false, err
	}
	e.last, e.lastStructure, e.lastSets = script, structure, sets
	e.full++
	return true, nil
}

// Applies says how often Apply replaced the whole table and how often it
// updated set elements only.
func (e *Enforcer) Applies() (full, partial int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.full, e.partial
}

// splitSets separates a compiled script into its structure (every line
// but the sets' elements) and each set's elements, as Compile writes them.
func splitSets(script string) (string, map[string][]string) {
	var b strings.Builder
	sets := map[string][]string{}
	set := ""
	for _, line := range strings.SplitAfter(script, "\n") {
		switch {
		case strings.HasPrefix(line, "\tset ") && strings.HasSuffix(line, " {\n"):
			set = strings.TrimSuffix(strings.TrimPrefix(line, "\tset "), " {\n")
			sets[set] = nil
		case set != "" && strings.HasPrefix(line, "\t\telements = { "):
			elems := strings.TrimSuffix(strings.TrimPrefix(line, "\t\telements = { "), " }\n")
			sets[set] = strings.Split(elems, ", ")
			continue
		case line == "\t}\n":
			set = ""
		}
		b.WriteString(line)
	}
	return b.String(), sets
}

// elementDiff is the nft commands that turn the sets old into new (the
// same sets, by structure).
func elementDiff(old, new map[string][]string) string {
	var b strings.Builder
	for name, elems := range new {
		had := map[string]bool{}
		for _, x := range old[name] {
			had[x] = true
		}
		var add []string
		for _, x := range elems {
			if !had[x] {
				add = append(add, x)
			}
			delete(had, x)
		}
		var del []string
		for x := range had {
			del = append(del, x)
		}
		sort.Strings(del)
		if len(del) > 0 {
			fmt.Fprintf(&b, "delete element inet %s %s { %s }\n", Table, name, strings.Join(del, ", "))
		}
		if len(add) > 0 {
			fmt.Fprintf(&b, "add element inet %s %s { %s }\n", Table, name, strings.Join(add, ", "))
		}
	}
	return b.String()
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
