package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// Enforcer swaps compiled rule sets into the kernel with the nft binary;
// one `nft -f` file is one transaction, so the table is never half-built.
// After the first, a rule set is applied as its difference from the last:
// set elements added and deleted, chains added, rewritten or deleted one by
// one (felix's incremental dataplane); the whole table is replaced only when
// that cannot be done (the table went, a chain's hook changed).
type Enforcer struct {
	// nft is the command that runs nft (a prefix such as `ip netns exec NS
	// nft` in tests).
	nft []string
	mu  sync.Mutex
	// cur is what the kernel holds (nil: unknown); last is the script it
	// came from, or "" after element updates moved it on.
	cur  *ruleset
	last string
	// indexed: last declares its sets without elements (ApplyIndexed), so
	// it stays what is installed across element updates.
	indexed       bool
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
// It sends only the difference from what is installed, in one transaction;
// when that fails (the table may have gone meanwhile) it replaces the table.
func (e *Enforcer) Apply(script string) (changed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if script == e.last && e.cur != nil {
		return false, nil
	}
	rs := parse(script)
	if e.cur != nil {
		if cmd, ok := diff(e.cur, rs); ok {
			if cmd == "" {
				e.cur, e.last, e.indexed = rs, script, false
				return false, nil
			}
			if e.run(cmd, "-f", "-") == nil {
				e.cur, e.last, e.indexed = rs, script, false
				e.partial++
				return true, nil
			}
		}
	}
	if err := e.run(script, "-f", "-"); err != nil {
		e.cur, e.last = nil, ""
		return false, err
	}
	e.cur, e.last, e.indexed = rs, script, false
	e.full++
	return true, nil
}

// SetSource holds the selector sets' elements outside the script
// (Members): sorted, by set name; ok is false for a set it does not own,
// whose elements the script carries (the nodes set of published ports).
type SetSource interface {
	Elements(set string) (elems []string, ok bool)
}

// ApplyIndexed installs script (from Compile with an index), whose sets
// are declared without elements: an installed set moves on by delta alone
// (Members.Delta since the last apply), a new one, or every one when the
// table is replaced whole, is filled from src. A change of this host's
// endpoints then costs what changed here, not the cluster's size.
func (e *Enforcer) ApplyIndexed(script string, src SetSource, delta map[string]SetChange) (changed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil && script == e.last {
		return e.applyElements(delta)
	}
	rs := parse(script)
	if e.cur != nil {
		for name, s := range rs.sets {
			was := e.cur.sets[name]
			if was == nil || !slices.Equal(was.decl, s.decl) {
				s.fill(name, src)
				continue
			}
			// Shared with the installed set until the difference lands.
			s.indexed, s.elems = true, was.elems
			s.del, s.add = onlyPresent(delta[name].Del, was.elems, true), onlyPresent(delta[name].Add, was.elems, false)
		}
		if cmd, ok := diff(e.cur, rs); ok {
			if cmd == "" {
				e.cur, e.last, e.indexed = rs, script, true
				return false, nil
			}
			if e.run(cmd, "-f", "-") == nil {
				for _, s := range rs.sets {
					s.moveOn()
				}
				e.cur, e.last, e.indexed = rs, script, true
				e.partial++
				return true, nil
			}
		}
	}
	rs.fill(src)
	if err := e.run(render(rs), "-f", "-"); err != nil {
		e.cur, e.last = nil, ""
		return false, err
	}
	e.cur, e.last, e.indexed = rs, script, true
	e.full++
	return true, nil
}

// onlyPresent keeps of xs those elems holds (present) or lacks: nft fails a
// whole transaction on deleting an absent element or adding a present one.
func onlyPresent(xs []string, elems map[string]struct{}, present bool) []string {
	return slices.DeleteFunc(slices.Clone(xs), func(x string) bool { _, has := elems[x]; return has != present })
}

// moveOn applies an indexed set's difference, once the kernel took it.
func (s *nftSet) moveOn() {
	for _, x := range s.del {
		delete(s.elems, x)
	}
	for _, x := range s.add {
		s.elems[x] = struct{}{}
	}
	s.indexed, s.add, s.del = false, nil, nil
}

// ErrNotInstalled: element updates need a rule set Apply installed.
var ErrNotInstalled = errors.New("no rule set installed yet")

// ApplyElements adds and deletes set elements (Members.Delta) in one
// transaction: an endpoint elsewhere in the cluster costs what it changes.
// When it fails the installed table is no longer known to match the index
// (the delta is spent): the next apply replaces it whole.
func (e *Enforcer) ApplyElements(delta map[string]SetChange) (changed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.applyElements(delta)
}

func (e *Enforcer) applyElements(delta map[string]SetChange) (changed bool, err error) {
	if e.cur == nil {
		return false, ErrNotInstalled
	}
	var b strings.Builder
	for name, c := range delta {
		set, ok := e.cur.sets[name]
		if !ok {
			e.cur, e.last = nil, ""
			return false, fmt.Errorf("set %s is not in the installed rule set: %w", name, ErrNotInstalled)
		}
		set.del, set.add = onlyPresent(c.Del, set.elems, true), onlyPresent(c.Add, set.elems, false)
		writeElements(&b, "delete", name, set.del)
		writeElements(&b, "add", name, set.add)
	}
	if b.Len() == 0 {
		return false, nil
	}
	if err := e.run(b.String(), "-f", "-"); err != nil {
		e.cur, e.last = nil, ""
		return false, err
	}
	for name := range delta {
		e.cur.sets[name].moveOn()
	}
	if !e.indexed {
		e.last = "" // its elements are no longer the installed ones
	}
	e.partial++
	return true, nil
}

// Applies says how often Apply replaced the whole table and how often it
// sent a difference.
func (e *Enforcer) Applies() (full, partial int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.full, e.partial
}

// Repair reinstalls the installed rule set when its table is gone (nft
// flush ruleset, nft delete table inet tabby), reading nothing from etcd;
// it reports whether it did. One `nft list tables` when nothing is missing.
func (e *Enforcer) Repair() (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
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
	if err := e.run(render(e.cur), "-f", "-"); err != nil {
		return false, err
	}
	return true, nil
}

// Remove deletes tabby's table; a missing table is fine.
func (e *Enforcer) Remove() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur, e.last = nil, ""
	err := e.run(fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", Table, Table), "-f", "-")
	if err != nil && !errors.Is(err, exec.ErrNotFound) {
		return err
	}
	return nil
}
