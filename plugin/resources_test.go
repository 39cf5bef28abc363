package plugin

import (
	"strings"
	"testing"
)

func TestParseDocumentsNamesTheBadField(t *testing.T) {
	docs, err := parseDocuments([]byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}\n---\n" +
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.0.0/16, blockSize: 28}\n"))
	if err != nil || len(docs) != 2 || docs[1].Metadata.Name != "b" {
		t.Fatalf("two documents: %v %v", docs, err)
	}
	for in, want := range map[string]string{
		"apiVersion: v9\nkind: IPPool\nmetadata: {name: a}\n":                       "apiVersion",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {}\n":                        "metadata.name",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspek: {}\n":       "spek",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: [\n": "not valid YAML",
		"": "no resources",
	} {
		if _, err := parseDocuments([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: want an error naming %q, got %v", in, want, err)
		}
	}
	var s poolSpec
	d, _ := parseDocuments([]byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16, blockSizes: 26}\n"))
	if err := decodeSpec(d[0], &s); err == nil || !strings.Contains(err.Error(), "blockSizes") {
		t.Fatalf("a misspelt spec field must be named: %v", err)
	}
}

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
