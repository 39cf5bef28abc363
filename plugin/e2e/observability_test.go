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
