package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// An etcd cluster as users run it: three members (Debian's etcd, each in a
// namespace of its own) and every daemon given all three endpoints. The
// leader is killed while 3 x 50 containers start. No run fails, no address
// is doubled or leaked, a record written during the election reaches every
// host (their caches go on without a gap), and IPAM checks clean.
func TestReliabilityEtcdLeaderLoss(t *testing.T) {
	const perHost = 50
	const fault = "etcd leader killed during 3 x 50 docker runs"
	l := lab.New(t, lab.Options{Hosts: 3, EtcdMembers: 3})
	createEverywhere(t, l, l.Hosts[0], "busy")
	st := labStore(t, l)
	ctx := context.Background()
	leader, err := l.EtcdCluster.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan []failedRun, 1)
	start := time.Now()
	go func() { done <- startMany(l, perHost, "busy") }()
	time.Sleep(2 * time.Second) // runs in flight
	killedAt := time.Since(start)
	if err := l.EtcdCluster.Kill(leader); err != nil {
		t.Fatal(err)
	}
	// The election, seen from a client of the two left.
	var election time.Duration
	for election == 0 {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if next, err := l.EtcdCluster.Leader(lctx); err == nil && next != leader {
			election = time.Since(start) - killedAt
		}
		cancel()
		if time.Since(start)-killedAt > 30*time.Second {
			t.Fatal("no new leader within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A policy written as soon as the cluster takes writes again.
	pol := datastore.NetworkPolicy{Name: "during-election", Selector: "all()",
		Ingress: []datastore.Rule{{Action: "Deny", Protocol: "TCP", Destination: datastore.RuleTarget{Ports: []datastore.Port{"31337"}}}, {Action: "Allow"}}}
	for err := st.Put(ctx, datastore.PolicyKey(pol.Name), &pol); err != nil; err = st.Put(ctx, datastore.PolicyKey(pol.Name), &pol) {
		if time.Since(start)-killedAt > 30*time.Second {
			t.Fatalf("no write taken within 30 s of the kill: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	failed := <-done
	report(t, fault, "new leader elected", fmt.Sprintf("%.1f s after the kill", election.Seconds()), election < 10*time.Second)
	var lines []string
	for _, f := range failed {
		lines = append(lines, fmt.Sprintf("%s (started %.1f s after the kill)", f, (f.at-killedAt).Seconds()))
	}
	report(t, fault, "docker runs that failed", fmt.Sprintf("%d of %d in %.0f s", len(failed), 3*perHost, time.Since(start).Seconds()), len(failed) == 0)
	if len(failed) > 0 {
		t.Errorf("failed runs:\n%s", strings.Join(lines, "\n"))
	}
	checkDistinct(t, l, fault, "busy", 3*perHost-len(failed))
	missing := 0
	for _, h := range l.Hosts {
		ok := false
		for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && !ok; time.Sleep(200 * time.Millisecond) {
			out, _ := h.Exec("nft", "list", "table", "inet", "tabby")
			ok = strings.Contains(out, "31337")
		}
		if !ok {
			missing++
		}
	}
	report(t, fault, "hosts enforcing the policy written during the election", fmt.Sprintf("%d of %d", len(l.Hosts)-missing, len(l.Hosts)), missing == 0)
	removeAllAndCheck(t, l, fault)
}
