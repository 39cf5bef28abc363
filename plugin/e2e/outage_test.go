package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// etcd stopped for longer than the hold time (9 s here, 15 s outage): every
// liveness lease lapses while etcd is away, and the daemons take new ones
// only once it answers. Peers wait out the liveness grace before dropping a
// node's sessions, so running containers lose no packet.
func TestReliabilityEtcdOutageBeyondHoldTime(t *testing.T) {
	const hold = 9 // lease TTL 6 s, grace 3 s
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	const fault = "etcd stopped 15 s, hold time 9 s"
	applyYAML(t, l, n0, "hold.yaml", fmt.Sprintf("apiVersion: tabby/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {holdTime: %d}\n", hold))
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipC := ipOf(t, n1, "containerC", "net1")
	eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })
	time.Sleep(2 * time.Second) // daemons move their liveness leases to the new hold time as soon as they see it

	done := make(chan int, 1)
	go func() { lost, _ := pingFor(n0, "containerA", ipC, 125); done <- lost }() // 25 s
	time.Sleep(time.Second)
	if err := l.Etcd.Freeze(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(15 * time.Second)
	if err := l.Etcd.Thaw(); err != nil {
		t.Fatal(err)
	}
	lost := <-done
	report(t, fault, "packets lost between running containers during and after the outage (leases lapse)",
		fmt.Sprintf("%d of 125", lost), lost == 0)
	eventually(t, 30*time.Second, "docker run works again", func() (string, bool) {
		out, err := n0.Docker("run", "--net", "net1", "--name", "after", "-tid", "busybox")
		if err != nil {
			n0.Docker("rm", "-f", "after")
		}
		return out, err == nil
	})
	_, ok := pings(n1, "containerC", ipOf(t, n0, "after", "net1"))
	report(t, fault, "after etcd is back a new container is reachable", fmt.Sprint(ok), ok)
}
