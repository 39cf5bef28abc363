package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

// Endpoints with equal labels and profiles share one copy of them, dropped
// with the last endpoint; sharing changes no selector's members, through
// label and profile changes.
func TestMembersShareLabels(t *testing.T) {
	m := NewMembers()
	m.SetProfiles(map[string]datastore.Profile{"web": {Labels: map[string]string{"tier": "front"}}})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	for i := 0; i < 1000; i++ {
		role := "web"
		if i%2 == 1 {
			role = "db"
		}
		m.Put(fmt.Sprint("ep", i), Endpoint{Labels: map[string]string{"role": role}, Profiles: []string{"web"}, Addrs: []netip.Addr{addr(i)}})
	}
	if len(m.attrs) != 2 {
		t.Fatalf("1000 endpoints of 2 label sets hold %d copies of labels, want 2", len(m.attrs))
	}
	if v4 := v4Of(m, "role == 'db'"); len(v4) != 500 || !slices.Contains(v4, addr(1).String()) {
		t.Fatalf("role == 'db' selects %d addresses, want 500 with %s", len(v4), addr(1))
	}
	if v4 := v4Of(m, "tier == 'front'"); len(v4) != 1000 {
		t.Fatalf("tier == 'front' (from the profile) selects %d, want 1000", len(v4))
	}
	// A profile's labels change: its endpoints are matched again and keep
	// their shared labels.
	m.SetProfiles(map[string]datastore.Profile{"web": {Labels: map[string]string{"tier": "back"}}})
	if v4 := v4Of(m, "tier == 'front'"); len(v4) != 0 {
		t.Fatalf("after the profile change tier == 'front' selects %d, want 0", len(v4))
	}
	if v4 := v4Of(m, "tier == 'back' && role == 'web'"); len(v4) != 500 {
		t.Fatalf("after the profile change tier == 'back' && role == 'web' selects %d, want 500", len(v4))
	}
	if len(m.attrs) != 2 || m.attrs[attrsKey(map[string]string{"role": "db"}, []string{"web"})].refs != 500 {
		t.Fatalf("after the profile change: %d label copies, want 2 with 500 holders each", len(m.attrs))
	}
	// One endpoint changes its labels, then all go.
	m.Put("ep0", Endpoint{Labels: map[string]string{"role": "db"}, Profiles: []string{"web"}, Addrs: []netip.Addr{addr(0)}})
	if v4 := v4Of(m, "role == 'db'"); len(v4) != 501 {
		t.Fatalf("after ep0 turned db, role == 'db' selects %d, want 501", len(v4))
	}
	for i := 0; i < 1000; i++ {
		m.Delete(fmt.Sprint("ep", i))
	}
	if len(m.attrs) != 0 {
		t.Fatalf("with no endpoint left the index holds %d label copies, want 0", len(m.attrs))
	}
	if v4 := v4Of(m, "role == 'db'"); len(v4) != 0 {
		t.Fatalf("with no endpoint left role == 'db' selects %d", len(v4))
	}
}

// v4Of follows src and lists its IPv4 set.
func v4Of(m *Members, src string) []string {
	m.Follow(src)
	elems, _ := m.Elements(SetName(src, false))
	return elems
}

// A selector no rule uses any more is followed, and its sets declared,
// for Linger: the next container of a network does not match the whole
// cluster again or refill its sets. After that it goes.
func TestUnusedSelectorsLinger(t *testing.T) {
	m := NewMembers()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
	m.Put("a", Endpoint{Labels: map[string]string{"role": "db"}, Addrs: []netip.Addr{addr(1)}})
	local := Endpoint{Iface: "caliaaaaaaaaaaa", Labels: map[string]string{"role": "db"}, Addrs: []netip.Addr{addr(1)}}
	pol := datastore.NetworkPolicy{Name: "p", Selector: "all()", Ingress: []datastore.Rule{{Action: "Allow",
		Source: datastore.RuleTarget{Selector: "role == 'db'"}}}}
	set := SetName("role == 'db'", false)
	if s, err := Compile(Input{Local: []Endpoint{local}, Policies: []datastore.NetworkPolicy{pol}, Members: m}); err != nil || !strings.Contains(s, "set "+set) {
		t.Fatalf("the selector's set is not declared: %v\n%s", err, s)
	}
	// The last local endpoint goes: no rule uses the selector.
	s, err := Compile(Input{Policies: []datastore.NetworkPolicy{pol}, Members: m})
	if err != nil || !strings.Contains(s, "set "+set) {
		t.Fatalf("a selector unused for less than Linger lost its set: %v\n%s", err, s)
	}
	m.Put("b", Endpoint{Labels: map[string]string{"role": "db"}, Addrs: []netip.Addr{addr(2)}})
	if got := fmt.Sprint(m.Delta()[set]); got != "{[10.0.0.2] []}" {
		t.Fatalf("a lingering selector does not follow changes: delta %s", got)
	}
	m.linger = -1 // its time is up
	if s, _ := Compile(Input{Policies: []datastore.NetworkPolicy{pol}, Members: m}); strings.Contains(s, set) {
		t.Fatalf("a selector unused past Linger keeps its set:\n%s", s)
	}
	if _, ok := m.Elements(set); ok || len(m.sels) != 0 {
		t.Fatal("a selector unused past Linger is still followed")
	}
}
