package policy

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// Members keeps, per selector, the addresses of the cluster's endpoints it
// selects, one endpoint change at a time (felix's incremental ipsets): an
// endpoint coming or going costs one match per selector, not a pass over
// the cluster. It records what changed since the last Delta, so the kernel's
// sets can follow by elements alone.
type Members struct {
	mu       sync.Mutex
	profiles map[string]map[string]string // profile -> its labels
	eps      map[string]member
	sels     map[string]*selMembers // selector source -> members
	byName   map[string]*selMembers // set name (both families) -> members
	attrs    map[string]*attrs      // by attrsKey: shared among endpoints
	linger   time.Duration          // Linger; shorter in tests
}

type member struct {
	*attrs
	addrs []netip.Addr
}

// attrs are labels and profiles, held once for every endpoint that has
// them (the replicas of a service): the index holds the whole cluster, and
// one small map per endpoint would be most of it.
type attrs struct {
	key      string
	labels   map[string]string // the endpoint's own
	profiles []string
	refs     int
}

// attrsKey is one string per distinct labels and profiles.
func attrsKey(labels map[string]string, profiles []string) string {
	var b strings.Builder
	for _, p := range profiles {
		b.WriteString(p)
		b.WriteByte(0)
	}
	b.WriteByte(1)
	b.WriteString(LabelsKey(labels))
	return b.String()
}

// LabelsKey is one string per distinct label set.
func LabelsKey(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// hold returns the shared attrs equal to labels and profiles, counting
// one more holder; the caller must not change either afterwards.
func (m *Members) hold(labels map[string]string, profiles []string) *attrs {
	k := attrsKey(labels, profiles)
	a := m.attrs[k]
	if a == nil {
		a = &attrs{key: k, labels: labels, profiles: profiles}
		m.attrs[k] = a
	}
	a.refs++
	return a
}

func (m *Members) drop(a *attrs) {
	if a.refs--; a.refs <= 0 {
		delete(m.attrs, a.key)
	}
}

type selMembers struct {
	sel   Selector
	names [2]string               // its sets: IPv4, IPv6
	used  time.Time               // when a compile last used it
	addrs map[netip.Addr]int      // -> endpoints holding it (an address moves between two)
	delta map[netip.Addr]struct{} // changed since the last Delta
}

// NewMembers starts an empty index.
func NewMembers() *Members {
	return &Members{profiles: map[string]map[string]string{}, eps: map[string]member{},
		sels: map[string]*selMembers{}, byName: map[string]*selMembers{}, attrs: map[string]*attrs{}, linger: Linger}
}

// membersOf indexes a fixed list of endpoints (Compile's input without an
// index).
func membersOf(all []Endpoint, profiles map[string]datastore.Profile) *Members {
	m := NewMembers()
	m.SetProfiles(profiles)
	for i, e := range all {
		m.Put(strconv.Itoa(i), e)
	}
	return m
}

// effective is an endpoint's labels over those of its profiles.
func (m *Members) effective(e member) map[string]string {
	if len(e.profiles) == 0 {
		return e.labels
	}
	out := map[string]string{}
	for _, p := range e.profiles {
		maps.Copy(out, m.profiles[p])
	}
	maps.Copy(out, e.labels)
	return out
}

// Put records the endpoint under key (a record's key), replacing what was
// there.
func (m *Members) Put(key string, e Endpoint) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(key)
	ne := member{attrs: m.hold(e.Labels, e.Profiles), addrs: e.Addrs}
	m.eps[key] = ne
	m.add(ne)
}

// Delete forgets the endpoint under key; a missing one is fine.
func (m *Members) Delete(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(key)
}

func (m *Members) remove(key string) {
	old, ok := m.eps[key]
	if !ok {
		return
	}
	delete(m.eps, key)
	labels := m.effective(old)
	for _, s := range m.sels {
		if s.sel.Matches(labels) {
			s.change(old.addrs, -1)
		}
	}
	m.drop(old.attrs)
}

func (m *Members) add(e member) {
	labels := m.effective(e)
	for _, s := range m.sels {
		if s.sel.Matches(labels) {
			s.change(e.addrs, +1)
		}
	}
}

// change counts addresses in or out, noting those whose membership flips.
func (s *selMembers) change(addrs []netip.Addr, by int) {
	for _, a := range addrs {
		before := s.addrs[a] > 0
		s.addrs[a] += by
		if s.addrs[a] <= 0 {
			delete(s.addrs, a)
		}
		if before != (s.addrs[a] > 0) {
			s.delta[a] = struct{}{}
		}
	}
}

// SetProfiles records the profiles' labels; endpoints of a profile whose
// labels changed are matched again.
func (m *Members) SetProfiles(profiles map[string]datastore.Profile) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := map[string]bool{}
	for name, p := range profiles {
		if !maps.Equal(m.profiles[name], p.Labels) {
			changed[name] = true
		}
	}
	for name := range m.profiles {
		if _, ok := profiles[name]; !ok {
			changed[name] = true
		}
	}
	if len(changed) == 0 {
		return
	}
	var again []string
	for key, e := range m.eps {
		if slices.ContainsFunc(e.profiles, func(p string) bool { return changed[p] }) {
			again = append(again, key)
		}
	}
	saved := map[string]member{}
	for _, key := range again {
		saved[key] = m.eps[key]
		saved[key].refs++ // kept through the remove
		m.remove(key)
	}
	m.profiles = map[string]map[string]string{}
	for name, p := range profiles {
		m.profiles[name] = p.Labels
	}
	for key, e := range saved {
		m.eps[key] = e
		m.add(e)
	}
}

// Follow starts following a selector: the first time, it is matched
// against every endpoint once; from then on it follows the changes. It
// reports false for a selector that does not parse (Compile refuses those
// before).
func (m *Members) Follow(src string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.follow(src) != nil
}

func (m *Members) follow(src string) *selMembers {
	if s := m.sels[src]; s != nil {
		return s
	}
	sel, err := ParseSelector(src)
	if err != nil {
		return nil
	}
	s := &selMembers{sel: sel, names: [2]string{SetName(src, false), SetName(src, true)}, used: time.Now(),
		addrs: map[netip.Addr]int{}, delta: map[netip.Addr]struct{}{}}
	for _, e := range m.eps {
		if sel.Matches(m.effective(e)) {
			s.change(e.addrs, +1)
		}
	}
	clear(s.delta) // the first listing is the set's whole content
	m.sels[src] = s
	m.byName[s.names[0]], m.byName[s.names[1]] = s, s
	return s
}

// Elements returns, sorted, the addresses in the set named name (SetName)
// of a followed selector; ok is false for any other name (a set the index
// does not own). It costs the set's size: only a new set or a whole table
// asks for it.
func (m *Members) Elements(name string) (elems []string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.byName[name]
	if s == nil {
		return nil, false
	}
	v6 := name == s.names[1]
	var out []string
	for _, a := range slices.SortedFunc(maps.Keys(s.addrs), netip.Addr.Compare) {
		if a.Is6() == v6 {
			out = append(out, a.String())
		}
	}
	return out, true
}

// Linger is how long the index keeps following a selector no rule uses
// any more, and the rule set keeps its sets: the last container of a
// network going and the next one coming would otherwise match the whole
// cluster again and refill a set as big as the cluster.
const Linger = 10 * time.Minute

// Retain follows the selectors in srcs (Follow) and marks them used, stops
// following those unused
// for longer than Linger, and returns every selector it follows: srcs in
// their order, then the lingering ones sorted (their sets stay declared).
func (m *Members) Retain(srcs []string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	keep := slices.Clone(srcs)
	for _, src := range srcs {
		if s := m.follow(src); s != nil {
			s.used = now
		}
	}
	var lingering []string
	for src, s := range m.sels {
		switch {
		case slices.Contains(srcs, src):
		case now.Sub(s.used) > m.linger:
			delete(m.sels, src)
			delete(m.byName, s.names[0])
			delete(m.byName, s.names[1])
		default:
			lingering = append(lingering, src)
		}
	}
	slices.Sort(lingering)
	return append(keep, lingering...)
}

// SetChange is what one named set gains and loses.
type SetChange struct{ Add, Del []string }

// Delta returns, by set name, the elements added and removed since the
// last Delta (or since a selector was first listed), and starts afresh.
func (m *Members) Delta() map[string]SetChange {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]SetChange{}
	for _, s := range m.sels {
		for a := range s.delta {
			name := s.names[0]
			if a.Is6() {
				name = s.names[1]
			}
			c := out[name]
			if s.addrs[a] > 0 {
				c.Add = append(c.Add, a.String())
			} else {
				c.Del = append(c.Del, a.String())
			}
			out[name] = c
		}
		clear(s.delta)
	}
	return out
}

// SetName names a selector's set of one family in the ruleset: by digest,
// so no user text enters it and the name stays the same across compiles.
func SetName(src string, v6 bool) string {
	if v6 {
		return "sel_" + SelectorDigest(src) + "_6"
	}
	return "sel_" + SelectorDigest(src) + "_4"
}
