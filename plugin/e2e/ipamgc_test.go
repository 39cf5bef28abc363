package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// A daemon that dies between assigning an address to Docker and recording
// the endpoint leaves an address nobody will release. The collector of the
// host that assigned it releases it after the grace period (3 s here), and
// nothing else: not running containers' addresses, not a network's
// --aux-address reservation, not another host's assignment. An endpoint
// record Docker does not have goes the same way, and a real kill -9 while
// containers start leaves nothing once they are removed.
func TestReliabilityIPAMCollector(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2, Env: []string{"TABBY_IPAM_GC_GRACE=3s"}})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	const fault = "daemon dies after assigning an address"
	createEverywhere(t, l, n0, "net1")
	createEverywhere(t, l, n0, "aux", "--subnet", "192.168.123.0/24", "--aux-address", "router=192.168.123.9")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "aux", "--name", "containerB", "-tid", "busybox")
	ipA, ipB := ipOf(t, n0, "containerA", "net1"), ipOf(t, n1, "containerB", "aux")

	// Exactly what node00's RequestAddress writes before the endpoint is
	// recorded; its daemon then "dies" and Docker never hears of it.
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{l.Etcd.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	orphan, err := ipamdriver.NewAllocator(st, n0.Name).AutoAssign(context.Background(), netip.Prefix{}, ipamdriver.NewHandle("docker-"))
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := n0.Tabby("ipam", "check"); !strings.Contains(out, "leaked") || !strings.Contains(out, orphan.String()) {
		t.Fatalf("tabby ipam check does not see the orphaned %s:\n%s", orphan, out)
	}
	took, released := untilFree(n0, orphan.String(), 20*time.Second)
	report(t, fault, "the orphaned address is released after the 3 s grace period", orphan.String()+" after "+took.String(),
		released && took >= 3*time.Second)

	// A record of an endpoint Docker does not have: the daemon died with
	// the endpoint's removal queued during an etcd outage. The record goes
	// after the grace period, then its address after another.
	staleIP, err := ipamdriver.NewAllocator(st, n0.Name).AutoAssign(context.Background(), netip.Prefix{}, ipamdriver.NewHandle("docker-"))
	if err != nil {
		t.Fatal(err)
	}
	const staleID = "5ca1ab1e00000000000000000000000000000000000000000000000000000000"
	rec := datastore.WorkloadEndpoint{Node: n0.Name, EndpointID: staleID, NetworkID: "0000", Interface: "cali5ca1ab1e000", IPv4: staleIP.String()}
	if err := st.Put(context.Background(), datastore.EndpointKey(n0.Name, staleID), &rec); err != nil {
		t.Fatal(err)
	}
	took, released = untilFree(n0, staleIP.String(), 30*time.Second)
	eps := mustTabby(t, n0, "get", "workloadendpoints")
	report(t, fault, "a stale endpoint record (daemon died with its removal queued) and its address are removed",
		staleIP.String()+" after "+took.String(), released && took >= 6*time.Second && !strings.Contains(eps, staleID[:12]))
	clean, out := ipamClean(n0)
	report(t, fault, "tabby ipam check clean; --aux-address 192.168.123.9 is no leak", strings.TrimSpace(strings.Split(out, "\n")[0]), clean)
	for ip, h := range map[string]*lab.Host{ipA: n0, ipB: n1, "192.168.123.9": n0} {
		// Running containers keep their endpoints and addresses.
		handle, _ := handleOf(h, ip)
		report(t, fault, "still assigned: "+ip+" (running containers, aux reservation)", "handle "+handle, handle != "" && handle != "-")
	}
	// Two releases: the orphan and the stale record's address.
	if m, err := fetch(n0, "http://127.0.0.1:9091/metrics"); err != nil || !strings.Contains(m, "tabby_ipam_gc_released_total 2") {
		t.Errorf("node00's metrics do not count the two releases: %v\n%s", err, grepLines(m, "tabby_ipam_gc"))
	}
	// The real thing: kill -9 node00's daemon while ten containers start,
	// then remove them all. Whatever the kill interrupted, after the grace
	// period nothing is left assigned or recorded.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n0.Docker("run", "--net", "net1", "--name", fmt.Sprintf("burst%d", i), "-tid", "busybox")
		}()
	}
	time.Sleep(300 * time.Millisecond)
	n0.KillTabby()
	n0.StartTabby("TABBY_IPAM_GC_GRACE=3s")
	wg.Wait()
	for i := range 10 {
		n0.Docker("rm", "-f", fmt.Sprintf("burst%d", i))
	}
	start := time.Now()
	var cleanAfter string
	eventually(t, 30*time.Second, "nothing left of the containers started across the crash", func() (string, bool) {
		clean, out := ipamClean(n0)
		eps := mustTabby(t, n0, "get", "workloadendpoints")
		cleanAfter = time.Since(start).Round(100 * time.Millisecond).String()
		return out + "\n" + eps, clean && strings.Count(eps, " "+n0.Name+" ") == 1 // containerA's
	})
	report(t, fault, "kill -9 while 10 containers start, all removed: ipam check clean, only containerA's record left",
		"after "+cleanAfter, true)

	// Docker still refuses the reserved address to a container.
	if out, err := n0.Docker("run", "--net", "aux", "--ip", "192.168.123.9", "--name", "taken", "-tid", "busybox"); err == nil {
		t.Errorf("a container got the --aux-address reservation 192.168.123.9:\n%s", out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// untilFree polls until ip is free in IPAM, up to limit.
func untilFree(h *lab.Host, ip string, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < limit {
		time.Sleep(500 * time.Millisecond)
		if handle, _ := handleOf(h, ip); handle == "-" {
			return time.Since(start).Round(100 * time.Millisecond), true
		}
	}
	return limit, false
}
