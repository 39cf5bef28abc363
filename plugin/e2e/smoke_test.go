package e2e

import (
	"testing"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

func TestSmoke(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1})
	h := l.Hosts[0]
	must(t, h, "network", "create", "--driver", "tabby", "--ipam-driver", "tabby", "net1")
	must(t, h, "run", "-d", "--net", "net1", "--name", "containerA", "busybox", "sleep", "3600")
	must(t, h, "run", "-d", "--net", "net1", "--name", "containerB", "busybox", "sleep", "3600")
	t.Log(must(t, h, "exec", "containerA", "ip", "addr"))
	t.Log(must(t, h, "exec", "containerA", "ip", "route"))
	t.Log(mustExec(t, h, "ip", "route"))
	mustPing(t, h, "containerA", ipOf(t, h, "containerB", "net1"))
}
