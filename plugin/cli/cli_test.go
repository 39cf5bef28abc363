package cli

import (
	"bytes"
	"strings"
	"testing"
)

// A flag beats the environment: the CLI's flag parsing, for real.
func TestFlagBeatsEnv(t *testing.T) {
	env := map[string]string{"TABBY_IPV4POOL_CIDR": "10.1.0.0/16"}
	var out bytes.Buffer
	cmd := New(&out, &out, func(k string) string { return env[k] })
	cmd.SetArgs([]string{"daemon", "--socket", "/flag/tabby.sock", "--ipv4pool-cidr", "bogus"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), `--ipv4pool-cidr "bogus"`) {
		t.Fatalf("a bad flag must fail validation naming it: %v", err)
	}
}
