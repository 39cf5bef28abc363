package cli

import (
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/policy"
)

// FuzzResourceYAML feeds arbitrary files to the resource parser and the
// checks behind `tabby apply`: no panic, and every rejection names a
// document, a field or the input.
func FuzzResourceYAML(f *testing.F) {
	for _, s := range []string{
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.10.0.0/16}\n",
		"apiVersion: tabby/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  selector: role == 'db'\n  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, '8000:8080']}}]\n",
		"apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.0.1, asNumber: 65000}\n---\nkind: Node\n",
		"apiVersion: v1\nkind: profile\n", "{}", "- a\n- b\n", ":\n  :", "spec: [",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := parseDocuments(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, d := range docs {
			if d.APIVersion != APIVersion || d.Metadata.Name == "" {
				t.Fatalf("accepted a document without apiVersion or name: %+v", d)
			}
			if d.Kind == "NetworkPolicy" {
				var p datastore.NetworkPolicy
				if decodeSpec(d, &p) == nil {
					p.Name = d.Metadata.Name
					if err := policy.Validate(p); err != nil && !strings.Contains(err.Error(), "NetworkPolicy "+p.Name) {
						t.Fatalf("policy error does not name the policy: %v", err)
					}
				}
			}
		}
	})
}
