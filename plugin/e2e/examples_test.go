package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// ipipWant is what seed 000's IPIP part must print: the tunl0 routes where
// the kernel has ipip (the guest of make test-kernel), else the refusal.
func ipipWant() string {
	if os.Getenv("TABBY_GUEST") != "" {
		return `10\.244\.\d+\.\d+/26 via 192\.168\.50\.11 dev tunl0 proto 77 onlink`
	}
	return "(ipip module|dev tunl0)"
}

// The labs in examples/ run as a user runs them, print what their seeds
// print, and leave nothing behind.
func TestExampleLabs(t *testing.T) {
	if why := lab.Requirements(); why != "" {
		t.Skip(why)
	}
	root, _ := filepath.Abs("../..")
	cases := map[string][]string{
		"seed001-three-hosts.sh": {
			"3 packets transmitted, 3 packets received, 0% packet loss",
			"2 packets transmitted, 0 packets received, 100% packet loss",
			`\| 10\.99\.0\.11 +\| node-to-node mesh \| up`,
			"selector: tabby.network == 'net2'",
			`(?s)containerA -> containerC by name.*PING containerC \(192\.168\.\d+\.\d+\).*3 packets received`,
			`blackhole 192\.168\.\d+\.\d+/26 proto 77`,
		},
		"seed000-node-status.sh": {
			`\| 192\.168\.50\.12 \| node-to-node mesh \| up`,
			`10\.244\.\d+\.\d+/26 via 192\.168\.50\.11 dev eth0 proto 77`,
			ipipWant(),
		},
		"seed002-autodetect.sh": {
			`interface=ens32,eth1[^#]*via 192\.168\.26\.72 dev ens32`,
			`skip-interface=eth1,ens32[^#]*via 192\.168\.30\.72 dev ens33`,
			`cidr=192\.168\.26\.0/24[^#]*via 192\.168\.26\.72 dev ens32`,
		},
		"route-reflector.sh": {
			`\| 10\.99\.0\.13 +\| route reflector \| up`,
			"3 packets transmitted, 3 packets received",
		},
	}
	for script, wants := range cases {
		t.Run(script, func(t *testing.T) {
			b := make([]byte, 3)
			rand.Read(b)
			id := hex.EncodeToString(b)
			cmd := exec.Command(filepath.Join(root, "examples", script))
			cmd.Dir = root
			// Its own lab ID, so that only its own namespaces count below.
			cmd.Env = append(os.Environ(), "TABBY_LAB_ID="+id)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			for _, w := range wants {
				if !regexp.MustCompile(w).Match(out) {
					t.Fatalf("%s output lacks %q:\n%s", script, w, out)
				}
			}
			if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), "-"+id) {
				t.Fatalf("%s left namespaces behind:\n%s", script, ns)
			}
		})
	}
}
