// Package policy enforces profiles and NetworkPolicies in the kernel. The
// rule set is computed purely from the endpoints, profiles and policies in
// etcd (Compile), then swapped in atomically as one nftables table of
// tabby's own (Apply), with sets of member addresses for every selector.
package policy

import (
	"fmt"
	"strings"
	"unicode"
)

// Selector is a parsed Calico-style label selector: `key == 'v'`,
// `key != 'v'`, `has(key)`, `key in {'a','b'}`, `key not in {...}`,
// `all()`, joined by `&&`, `||`, `!` and parentheses.
type Selector interface {
	Matches(labels map[string]string) bool
}

type (
	allSel struct{}
	hasSel struct{ key string }
	eqSel  struct {
		key    string
		values []string
		negate bool
	}
	notSel struct{ s Selector }
	andSel struct{ a, b Selector }
	orSel  struct{ a, b Selector }
)

func (allSel) Matches(map[string]string) bool { return true }
func (s hasSel) Matches(l map[string]string) bool {
	_, ok := l[s.key]
	return ok
}
func (s eqSel) Matches(l map[string]string) bool {
	v, ok := l[s.key]
	in := false
	for _, w := range s.values {
		in = in || (ok && v == w)
	}
	return in != s.negate
}
func (s notSel) Matches(l map[string]string) bool { return !s.s.Matches(l) }
func (s andSel) Matches(l map[string]string) bool { return s.a.Matches(l) && s.b.Matches(l) }
func (s orSel) Matches(l map[string]string) bool  { return s.a.Matches(l) || s.b.Matches(l) }

// ParseSelector parses a selector; "" selects every endpoint.
func ParseSelector(src string) (Selector, error) {
	p := &parser{src: src}
	p.skip()
	if p.pos == len(p.src) {
		return allSel{}, nil
	}
	s, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.skip(); p.pos != len(p.src) {
		return nil, p.fail("unexpected %q", p.src[p.pos:])
	}
	return s, nil
}

type parser struct {
	src string
	pos int
}

func (p *parser) fail(format string, a ...any) error {
	return fmt.Errorf("selector %q at offset %d: %s (example: role == 'db' && has(tier))", p.src, p.pos, fmt.Sprintf(format, a...))
}

func (p *parser) skip() {
	for p.pos < len(p.src) && unicode.IsSpace(rune(p.src[p.pos])) {
		p.pos++
	}
}

// eat consumes tok when it comes next.
func (p *parser) eat(tok string) bool {
	p.skip()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *parser) or() (Selector, error) {
	s, err := p.and()
	for err == nil && p.eat("||") {
		var r Selector
		if r, err = p.and(); err == nil {
			s = orSel{s, r}
		}
	}
	return s, err
}

func (p *parser) and() (Selector, error) {
	s, err := p.unary()
	for err == nil && p.eat("&&") {
		var r Selector
		if r, err = p.unary(); err == nil {
			s = andSel{s, r}
		}
	}
	return s, err
}

func (p *parser) unary() (Selector, error) {
	if p.eat("!") {
		s, err := p.unary()
		return notSel{s}, err
	}
	if p.eat("(") {
		s, err := p.or()
		if err == nil && !p.eat(")") {
			err = p.fail("missing )")
		}
		return s, err
	}
	if p.eat("all()") {
		return allSel{}, nil
	}
	if p.eat("has(") {
		k := p.ident()
		if k == "" || !p.eat(")") {
			return nil, p.fail("has() takes one label name")
		}
		return hasSel{k}, nil
	}
	k := p.ident()
	if k == "" {
		return nil, p.fail("expected a label name")
	}
	switch {
	case p.eat("=="), p.eat("!="):
		neg := p.src[p.pos-2] == '!'
		v, err := p.str()
		return eqSel{key: k, values: []string{v}, negate: neg}, err
	case p.eat("not in"):
		vs, err := p.set()
		return eqSel{key: k, values: vs, negate: true}, err
	case p.eat("in"):
		vs, err := p.set()
		return eqSel{key: k, values: vs}, err
	}
	return nil, p.fail("expected ==, !=, in or not in after %q", k)
}

func (p *parser) ident() string {
	p.skip()
	start := p.pos
	for p.pos < len(p.src) {
		c := rune(p.src[p.pos])
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && !strings.ContainsRune("_-./", c) {
			break
		}
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *parser) str() (string, error) {
	p.skip()
	if p.pos >= len(p.src) || (p.src[p.pos] != '\'' && p.src[p.pos] != '"') {
		return "", p.fail("expected a quoted value")
	}
	q := p.src[p.pos]
	end := strings.IndexByte(p.src[p.pos+1:], q)
	if end < 0 {
		return "", p.fail("unterminated string")
	}
	v := p.src[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

func (p *parser) set() ([]string, error) {
	if !p.eat("{") {
		return nil, p.fail("expected {")
	}
	var out []string
	for !p.eat("}") {
		v, err := p.str()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if !p.eat(",") && !p.eat("}") {
			return nil, p.fail("expected , or }")
		} else if p.src[p.pos-1] == '}' {
			break
		}
	}
	return out, nil
}
