package dockersync

import "testing"

// A mirrored network names the origin's plugin reference when this host
// knows tabby by it, else this host's own name for tabby.
func TestMirrorDriver(t *testing.T) {
	legacy := map[string]bool{"tabby": true, "tabby:latest": true}
	managed := map[string]bool{"tabby": true, "tabby:latest": true, "reg:5000/tabby:v1": true}
	for _, c := range []struct {
		origin string
		local  map[string]bool
		want   string
	}{
		{"reg:5000/tabby:v1", managed, "reg:5000/tabby:v1"},
		{"tabby", managed, "tabby"},
		{"", legacy, "tabby"},
		{"other:5000/tabby:v9", managed, "reg:5000/tabby:v1"},
		{"other:5000/tabby:v9", legacy, "tabby"},
	} {
		if got := mirrorDriver(c.origin, c.local); got != c.want {
			t.Errorf("mirrorDriver(%q, %v) = %q, want %q", c.origin, c.local, got, c.want)
		}
	}
}
