package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// fetch GETs a URL from inside a lab host (busybox wget).
func fetch(h *lab.Host, url string) (string, error) {
	return h.Exec("busybox", "wget", "-q", "-O", "-", url)
}

// /metrics, /healthz and /readyz on the default --metrics-addr of each
// host: endpoint, IPAM, BGP, route and request figures a user would graph.
func TestMetricsAndHealth(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) {
		return pings(n0, "containerA", ipOf(t, n1, "containerC", "net1"))
	})
	if out, err := fetch(n0, "http://127.0.0.1:9091/healthz"); err != nil || out != "ok" {
		t.Fatalf("/healthz: %v %q", err, out)
	}
	eventually(t, 30*time.Second, "/readyz once the peer is established", func() (string, bool) {
		out, err := fetch(n0, "http://127.0.0.1:9091/readyz")
		return out, err == nil && out == "ready"
	})
	var out string
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^tabby_local_endpoints 1$`),
		regexp.MustCompile(`(?m)^tabby_ipam_blocks [1-9]`),
		regexp.MustCompile(`(?m)^tabby_ipam_addresses_in_use [1-9]`),
		regexp.MustCompile(`(?m)^tabby_bgp_peers\{state="established"\} 1$`),
		regexp.MustCompile(`(?m)^tabby_routes_installed [1-9]`),
		regexp.MustCompile(`(?m)^tabby_plugin_requests_total\{method="NetworkDriver.Join",result="ok"\} 1$`),
		regexp.MustCompile(`(?m)^tabby_plugin_request_duration_seconds_count\{method="IpamDriver.RequestAddress"\} [1-9]`),
		regexp.MustCompile(`(?m)^tabby_dataplane_apply_duration_seconds_count\{what="policy"\} [1-9]`),
		regexp.MustCompile(`(?m)^tabby_datastore_up 1$`),
		regexp.MustCompile(`(?m)^tabby_datastore_db_size_bytes\{endpoint="[^"]+"\} [1-9]`),
		regexp.MustCompile(`(?m)^tabby_datastore_db_full\{endpoint="[^"]+"\} 0$`),
		regexp.MustCompile(`(?m)^tabby_datastore_lists_total 1$`),
		regexp.MustCompile(`(?m)^tabby_datastore_requests_total\{method="Range"\} [1-9]`),
	}
	eventually(t, 15*time.Second, "every metric on node00", func() (string, bool) {
		var err error
		if out, err = fetch(n0, "http://127.0.0.1:9091/metrics"); err != nil {
			return err.Error(), false
		}
		for _, re := range want {
			if !re.MatchString(out) {
				return "missing " + re.String() + "\n" + out, false
			}
		}
		return "", true
	})
	if !strings.Contains(out, "process_resident_memory_bytes") {
		t.Fatal("/metrics lacks the process metrics")
	}
}

// The daemon's Go runtime follows FelixConfiguration's goGCThreshold and
// goMemoryLimitMB as Felix's does, seen in its own /metrics: Felix's
// default 40, the cluster's setting, a node's own over it, and back when
// removed; a bad value is refused naming the field, and nothing is stored.
func TestGoRuntimeFromFelixConfiguration(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0 := l.Hosts[0]
	gauges := func(h *lab.Host) (string, bool) {
		out, err := fetch(h, "http://127.0.0.1:9091/metrics")
		if err != nil {
			return err.Error(), false
		}
		var got []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "go_gc_gogc_percent ") || strings.HasPrefix(line, "go_gc_gomemlimit_bytes ") {
				got = append(got, line)
			}
		}
		return strings.Join(got, "; "), true
	}
	want := func(h *lab.Host, what, gogc, limit string) {
		t.Helper()
		eventually(t, 30*time.Second, h.Name+": "+what, func() (string, bool) {
			s, ok := gauges(h)
			return s, ok && strings.Contains(s, "go_gc_gogc_percent "+gogc) && strings.Contains(s, "go_gc_gomemlimit_bytes "+limit)
		})
	}
	noLimit := "9.223372036854776e+18"
	for _, h := range l.Hosts {
		want(h, "Felix's default GC threshold, no limit", "40", noLimit)
	}
	applyYAML(t, l, n0, "gort.yaml", "apiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {goGCThreshold: 100}\n"+
		"---\napiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: node.node01}\nspec: {goGCThreshold: 25, goMemoryLimitMB: 96}\n")
	want(n0, "the cluster's threshold", "100", noLimit)
	want(l.Hosts[1], "its own threshold and limit", "25", "1.00663296e+08")
	out, err := n0.Tabby("apply", "-f", writeFile(t, l, "bad.yaml",
		"apiVersion: tabby/v1\nkind: FelixConfiguration\nmetadata: {name: node.node00}\nspec: {goGCThreshold: 0}\n"))
	if err == nil || !strings.Contains(out, "spec.goGCThreshold 0") {
		t.Fatalf("goGCThreshold 0 must be refused naming the field: %v\n%s", err, out)
	}
	if got := mustTabby(t, n0, "get", "felixconfigs"); strings.Contains(got, "node.node00") {
		t.Fatalf("the refused setting was stored:\n%s", got)
	}
	mustTabby(t, n0, "delete", "felixconfig", "default")
	mustTabby(t, n0, "delete", "felixconfig", "node.node01")
	for _, h := range l.Hosts {
		want(h, "back to the default", "40", noLimit)
	}
}
