package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// The suite runs once per Docker version (make e2e-20, make e2e-29): this
// proves each run drove the dockerd it was meant to, and that the CLI
// speaks to it.
func TestDockerVersion(t *testing.T) {
	want := os.Getenv("TABBY_DOCKER_MAJOR")
	if want == "" {
		t.Skip("TABBY_DOCKER_MAJOR is unset: make e2e-20 and make e2e-29 (both run by make test) set it")
	}
	l := lab.New(t, lab.Options{Hosts: 1, NoTabby: true})
	v := must(t, l.Hosts[0], "version", "-f", "{{.Server.Version}}")
	if !strings.HasPrefix(v, want+".") {
		t.Fatalf("dockerd %s (TABBY_DOCKERD=%q) reports version %q, want %s.x", lab.Dockerd(), os.Getenv("TABBY_DOCKERD"), v, want)
	}
	t.Logf("dockerd %s: Docker %s", lab.Dockerd(), v)
}
