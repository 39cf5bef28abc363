package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ruleset is a compiled script read back into its sets and chains, as
// Compile writes them (one block per set or chain, one rule per line), so
// two of them can be compared block by block.
type ruleset struct {
	sets   map[string]*nftSet
	chains map[string]*nftChain
	order  []string // "set NAME" and "chain NAME", as written
}

type nftSet struct {
	decl  []string // type, comment
	elems map[string]struct{}
	// indexed: the installed set moves on by add and del alone (its
	// elements come from an index, not the script).
	indexed  bool
	add, del []string
}

type nftChain struct {
	head  string // "type ... hook ...; policy ...;" of a base chain, else ""
	rules []string
}

// parse reads a script from Compile.
func parse(script string) *ruleset {
	rs := &ruleset{sets: map[string]*nftSet{}, chains: map[string]*nftChain{}}
	var set *nftSet
	var chain *nftChain
	for _, line := range strings.Split(script, "\n") {
		switch {
		case strings.HasPrefix(line, "\tset ") && strings.HasSuffix(line, " {"):
			name := strings.TrimSuffix(strings.TrimPrefix(line, "\tset "), " {")
			set = &nftSet{elems: map[string]struct{}{}}
			rs.sets[name] = set
			rs.order = append(rs.order, "set "+name)
		case strings.HasPrefix(line, "\tchain ") && strings.HasSuffix(line, " {"):
			name := strings.TrimSuffix(strings.TrimPrefix(line, "\tchain "), " {")
			chain = &nftChain{}
			rs.chains[name] = chain
			rs.order = append(rs.order, "chain "+name)
		case line == "\t}":
			set, chain = nil, nil
		case set != nil && strings.HasPrefix(line, "\t\telements = { "):
			for _, x := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(line, "\t\telements = { "), " }"), ", ") {
				set.elems[x] = struct{}{}
			}
		case set != nil:
			set.decl = append(set.decl, strings.TrimSpace(line))
		case chain != nil && chain.head == "" && len(chain.rules) == 0 && strings.HasPrefix(line, "\t\ttype ") && strings.Contains(line, " hook "):
			chain.head = strings.TrimSpace(line)
		case chain != nil:
			chain.rules = append(chain.rules, strings.TrimSpace(line))
		}
	}
	return rs
}

// render writes rs as a script that replaces the whole table.
func render(rs *ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\ntable inet %s {\n", Table, Table, Table)
	for _, block := range rs.order {
		kind, name, _ := strings.Cut(block, " ")
		fmt.Fprintf(&b, "\t%s %s {\n", kind, name)
		if kind == "set" {
			s := rs.sets[name]
			for _, d := range s.decl {
				fmt.Fprintf(&b, "\t\t%s\n", d)
			}
			if len(s.elems) > 0 {
				fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(slices.Sorted(maps.Keys(s.elems)), ", "))
			}
		} else {
			c := rs.chains[name]
			if c.head != "" {
				fmt.Fprintf(&b, "\t\t%s\n", c.head)
			}
			for _, r := range c.rules {
				fmt.Fprintf(&b, "\t\t%s\n", r)
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// diff returns the nft commands that turn the installed old into new in one
// transaction: new sets, element changes, new chains, changed chains
// flushed and refilled, then what is gone (chains before the sets they
// used). ok is false when only a whole replacement will do: a set's type or
// a chain's hook changed.
func diff(old, new *ruleset) (cmds string, ok bool) {
	var b strings.Builder
	t := "inet " + Table
	for _, block := range new.order {
		kind, name, _ := strings.Cut(block, " ")
		if kind != "set" {
			continue
		}
		s, was := new.sets[name], old.sets[name]
		if was == nil {
			fmt.Fprintf(&b, "add set %s %s { %s; }\n", t, name, strings.Join(s.decl, "; "))
			writeElements(&b, "add", name, slices.Sorted(maps.Keys(s.elems)))
			continue
		}
		if !slices.Equal(s.decl, was.decl) {
			return "", false
		}
		if s.indexed {
			writeElements(&b, "delete", name, s.del)
			writeElements(&b, "add", name, s.add)
			continue
		}
		writeElements(&b, "delete", name, missing(was.elems, s.elems))
		writeElements(&b, "add", name, missing(s.elems, was.elems))
	}
	var changed []string
	for _, block := range new.order {
		kind, name, _ := strings.Cut(block, " ")
		if kind != "chain" {
			continue
		}
		c, was := new.chains[name], old.chains[name]
		switch {
		case was == nil && c.head != "":
			fmt.Fprintf(&b, "add chain %s %s { %s }\n", t, name, c.head)
		case was == nil:
			fmt.Fprintf(&b, "add chain %s %s\n", t, name)
		case was.head != c.head:
			return "", false
		case slices.Equal(was.rules, c.rules):
			continue
		default:
			fmt.Fprintf(&b, "flush chain %s %s\n", t, name)
		}
		changed = append(changed, name)
	}
	for _, name := range changed {
		for _, r := range new.chains[name].rules {
			fmt.Fprintf(&b, "add rule %s %s %s\n", t, name, r)
		}
	}
	var gone []string
	for _, block := range old.order {
		if kind, name, _ := strings.Cut(block, " "); kind == "chain" && new.chains[name] == nil {
			fmt.Fprintf(&b, "flush chain %s %s\n", t, name)
			gone = append(gone, name)
		}
	}
	for _, name := range gone {
		fmt.Fprintf(&b, "delete chain %s %s\n", t, name)
	}
	for _, block := range old.order {
		if kind, name, _ := strings.Cut(block, " "); kind == "set" && new.sets[name] == nil {
			fmt.Fprintf(&b, "delete set %s %s\n", t, name)
		}
	}
	return b.String(), true
}

// fill takes every set's elements from src.
func (rs *ruleset) fill(src SetSource) {
	for name, s := range rs.sets {
		s.fill(name, src)
	}
}

// fill takes the set's elements, named name, from src when src owns it;
// a set src does not own keeps the script's elements.
func (s *nftSet) fill(name string, src SetSource) {
	s.indexed, s.add, s.del = false, nil, nil
	elems, ok := src.Elements(name)
	if !ok {
		return
	}
	s.elems = map[string]struct{}{}
	for _, x := range elems {
		s.elems[x] = struct{}{}
	}
}

// Whole returns script (from Compile with an index) with every set's
// elements from src: what a whole replacement installs.
func Whole(script string, src SetSource) string {
	rs := parse(script)
	rs.fill(src)
	return render(rs)
}

// missing lists, sorted, what a has and b has not.
func missing(a, b map[string]struct{}) []string {
	var out []string
	for x := range a {
		if _, ok := b[x]; !ok {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// writeElements writes one add or delete element command, if any.
func writeElements(b *strings.Builder, verb, set string, elems []string) {
	if len(elems) > 0 {
		fmt.Fprintf(b, "%s element inet %s %s { %s }\n", verb, Table, set, strings.Join(elems, ", "))
	}
}
