package policy

import (
	"fmt"
	"net/netip"
	"slices"
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
	return m.Elements(SetName(src, false))
}
