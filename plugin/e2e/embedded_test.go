package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
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

	// Only root reaches the embedded etcd: it listens on a unix socket in
	// a 0700 directory, on no TCP port, and user nobody's CLI is refused
	// for reading and writing alike.
	ls := mustExec(t, h, "ss", "-Hltn")
	report(t, "datastore access", "the embedded etcd listens on no TCP port", "ports 12379/12380 listening: "+
		fmt.Sprint(strings.Contains(ls, ":12379") || strings.Contains(ls, ":12380")), !strings.Contains(ls, ":12379") && !strings.Contains(ls, ":12380"))
	// The socket's own directory shuts others out (the lab's parent
	// directories would too; on a host, /run/tabby is all there is).
	mode := mustExec(t, h, "stat", "-c", "%a %U", filepath.Join(h.Dir, "run"))
	report(t, "datastore access", "the embedded etcd's socket directory (--run-dir)", "mode "+mode, mode == "700 root")
	asNobody := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.NS, "setpriv", "--reuid=65534", "--regid=65534",
			"--clear-groups", "--", l.Bin}, args...)...)
		cmd.Env = h.TabbyEnv()
		cmd.Stdin = strings.NewReader(stdin) // the lab's files are root's: the pool comes on standard input
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pool := "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: evil}\nspec: {cidr: 10.66.0.0/16}\n"
	for _, args := range [][]string{{"get", "ippools"}, {"apply", "-f", "-"}} {
		out, err := asNobody(pool, args...)
		report(t, "datastore access", "user nobody: tabby "+args[0]+" (read or write the embedded etcd)", firstLine(out, "permission denied"),
			err != nil && strings.Contains(out, "etcd.sock") && strings.Contains(out, "permission denied"))
	}
	if pools := mustTabby(t, h, "get", "ippools"); strings.Contains(pools, "evil") || !strings.Contains(pools, "192.168.0.0/16") {
		t.Fatalf("pools after nobody's attempts (root's CLI still works):\n%s", pools)
	}
}
