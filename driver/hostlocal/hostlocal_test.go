package hostlocal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What a Join records survives a restart, is found by sandbox, goes with
// Delete (twice is fine), and a broken or hostile file is dropped, not
// acted on.
func TestJoinedEndpointsSurviveARestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "endpoints")
	s, bad, err := Open(dir)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	a := Joined{EndpointID: "aaaa", SandboxKey: "/var/run/docker/netns/x", Gateway: "169.254.1.1"}
	b := Joined{EndpointID: "bbbb", SandboxKey: "/var/run/docker/netns/x", Gateway: "169.254.1.2", Subnet: "10.9.0.0/24"}
	c := Joined{EndpointID: "cccc", SandboxKey: "/var/run/docker/netns/y", Gateway: "169.254.1.1"}
	for _, j := range []Joined{a, b, c} {
		if err := s.Put(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(Joined{EndpointID: "../../etc/passwd", SandboxKey: "k", Gateway: "169.254.1.1"}); err == nil {
		t.Fatal("an endpoint ID naming a path outside the directory was stored")
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	os.WriteFile(filepath.Join(dir, "dddd"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(dir, "eeee"), []byte(`{"endpointID":"ffff","sandboxKey":"k","gateway":"169.254.1.1"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "gggg"), []byte(`{"endpointID":"gggg","sandboxKey":"k","gateway":"8.8.8.8.8"}`), 0o600)

	s, bad, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 {
		t.Fatalf("bad files reported: %v; want the three broken ones", bad)
	}
	for _, name := range []string{"dddd", "eeee", "gggg"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Fatalf("broken file %s kept", name)
		}
	}
	in := s.InSandbox("/var/run/docker/netns/x")
	if len(in) != 2 || in[0] != a || in[1] != b {
		t.Fatalf("sandbox x after reopening: %+v", in)
	}
	if got, ok := s.Get("cccc"); !ok || got != c {
		t.Fatalf("cccc after reopening: %+v %v", got, ok)
	}
	for i := 0; i < 2; i++ {
		if err := s.Delete("aaaa"); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if in := s.InSandbox("/var/run/docker/netns/x"); len(in) != 1 || in[0] != b {
		t.Fatalf("sandbox x after deleting aaaa: %+v", in)
	}
	if s.Delete("../x") != nil || len(s.All()) != 2 {
		t.Fatalf("after deletes: %+v", s.All())
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "bbbb,cccc" {
		t.Fatalf("files left: %v", names)
	}
}
