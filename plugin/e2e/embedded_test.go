package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// The single-host default: no ETCD_ENDPOINTS, tabby runs etcd itself and
// keeps its data in --data-dir across restarts; the CLI finds it unaided.
func TestEmbeddedEtcd(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1, EmbeddedEtcd: true})
	h := l.Hosts[0]
	if pools := mustTabby(t, h, "get", "ippools"); !strings.Contains(pools, "192.168.0.0/16") {
		t.Fatalf("default pool missing on first start:\n%s", pools)
	}
	must(t, h, "network", "create", tabbyNet, tabbyIPAM, "net1")
	must(t, h, "run", "-d", "--net", "net1", "--name", "containerA", "busybox", "sleep", "3600")
	must(t, h, "run", "-d", "--net", "net1", "--name", "containerB", "busybox", "sleep", "3600")
	mustPing(t, h, "containerA", ipOf(t, h, "containerB", "net1"))
	eventually(t, 5*time.Second, "net1 named", func() (string, bool) {
		out, _ := h.Tabby("get", "networks")
		return out, strings.Contains(out, "net1")
	})
	h.StopTabby()
	h.StartTabby()
	if out := mustTabby(t, h, "get", "workloadendpoints"); strings.Count(out, "node00") != 2 {
		t.Fatalf("endpoints lost across a restart of the embedded etcd:\n%s", out)
	}
	must(t, h, "run", "-d", "--net", "net1", "--name", "containerC", "busybox", "sleep", "3600")
	ipC := ipOf(t, h, "containerC", "net1")
	for _, c := range []string{"containerA", "containerB"} {
		if ipOf(t, h, c, "net1") == ipC {
			t.Fatalf("after restart containerC got %s, which %s holds", ipC, c)
		}
	}
	mustPing(t, h, "containerA", ipC)
}
