package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// Records written straight to etcd that do not hold together: garbage, a
// node record that names node01 under another key with another address,
// an endpoint whose interface name is nft syntax, a pool with an impossible
// block size, a peer without an address, a policy stored under another
// name. The daemons skip each with a warning, and nothing else changes:
// containers start, reach each other across hosts, networks stay apart,
// and no BGP session goes to the impostor's address.
func TestSecurityBadRecords(t *testing.T) {
	const fault = "datastore"
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	st := labStore(t, l)
	bad := map[string]string{
		datastore.NodeKey("garbage"):              "{not json",
		datastore.NodeKey("impostor"):             `{"name":"node01","ipv4Address":"10.99.0.66/24"}`,
		datastore.EndpointKey("node00", "evil"):   `{"node":"node00","endpointID":"evil","interfaceName":"cali1\"; accept","ipv4":"10.66.0.1","networkID":"x"}`,
		datastore.PoolKey("tiny"):                 `{"name":"tiny","cidr":"10.66.0.0/16","blockSize":3}`,
		datastore.BGPPeerKey("nowhere"):           `{"name":"nowhere","peerIP":"somewhere","asNumber":65000}`,
		datastore.PolicyKey("elsewhere"):          `{"name":"allow-all","order":1,"selector":"all()","ingress":[{"action":"Allow"}]}`,
		datastore.Prefix + "networks/half-a-json": `{"id":`,
	}
	for k, v := range bad {
		if _, err := st.RawCAS(context.Background(), k, 0, v); err != nil {
			t.Fatal(err)
		}
	}
	createEverywhere(t, l, n0, "net1")
	createEverywhere(t, l, n0, "net2")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	must(t, n1, "run", "--net", "net2", "--name", "containerB", "-tid", "busybox")
	ipC, ipB := ipOf(t, n1, "containerC", "net1"), ipOf(t, n1, "containerB", "net2")
	var out string
	ok := false
	for i := 0; i < 30 && !ok; i++ {
		out, ok = pings(n0, "containerA", ipC)
		if !ok {
			time.Sleep(time.Second)
		}
	}
	report(t, fault, fmt.Sprintf("%d bad records in etcd: a container reaches one on another host", len(bad)), fmt.Sprint(ok), ok)
	if !ok {
		t.Logf("ping: %s", out)
	}
	_, crossed := pings(n0, "containerA", ipB)
	report(t, fault, "a policy stored under another name opens nothing: net1 -> net2", fmt.Sprintf("reached: %v", crossed), !crossed)
	routes, _ := n0.Exec("ip", "route")
	sess, _ := n0.Tabby("node", "status")
	impostor := strings.Contains(sess, "10.99.0.66") || strings.Contains(routes, "10.99.0.66")
	report(t, fault, "the impostor node record (node01 at 10.99.0.66)", fmt.Sprintf("session or route to it: %v", impostor), !impostor)
	// Each daemon warns of every bad record it read.
	for _, h := range []*lab.Host{n0, n1} {
		log, _ := os.ReadFile(filepath.Join(h.Dir, "tabby.log"))
		var missed []string
		for k := range bad {
			if !strings.Contains(string(log), `"stored record skipped" key=`+k) && !strings.Contains(string(log), "stored record skipped key="+k) {
				missed = append(missed, k)
			}
		}
		// Each daemon reads every kind but the other host's endpoints.
		if h == n1 {
			missed = without(missed, datastore.EndpointKey("node00", "evil"))
		}
		report(t, fault, h.Name+" warns of each bad record it read", fmt.Sprintf("%d unmentioned", len(missed)), len(missed) == 0)
		if len(missed) > 0 {
			t.Logf("%s's log does not mention %v", h.Name, missed)
		}
	}
}

func without(list []string, x string) []string {
	var out []string
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}
