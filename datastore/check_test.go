package datastore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

// Records written straight to etcd that do not hold together are skipped by
// listings (the good ones still come) and refused by Get.
func TestBadRecordsAreSkippedNotBlocking(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	raw := func(key, value string) {
		t.Helper()
		if _, err := st.RawCAS(ctx, key, 0, value); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Put(ctx, datastore.NodeKey("good"), &datastore.Node{Name: "good", IPv4: "10.0.0.1/24"}); err != nil {
		t.Fatal(err)
	}
	raw(datastore.NodeKey("garbage"), "{not json")
	raw(datastore.NodeKey("impostor"), `{"name":"good","ipv4Address":"10.0.0.66/24"}`)
	raw(datastore.NodeKey("badaddr"), `{"name":"badaddr","ipv4Address":"10.0.0.300/24"}`)
	raw(datastore.EndpointKey("good", "e1"), `{"node":"good","endpointID":"e1","interfaceName":"cali1; drop","ipv4":"10.1.0.1"}`)
	raw(datastore.EndpointKey("good", "e2"), `{"node":"good","endpointID":"e2","interfaceName":"cali2","ipv4":"fd00::1"}`)
	raw(datastore.PoolKey("tiny"), `{"name":"tiny","cidr":"10.0.0.0/8","blockSize":3}`)
	raw(datastore.BGPPeerKey("p"), `{"name":"p","peerIP":"not-an-ip"}`)

	nodes, err := datastore.ListAs[datastore.Node](ctx, st, datastore.NodesDir)
	if err != nil || len(nodes) != 1 || nodes[0].IPv4 != "10.0.0.1/24" {
		t.Fatalf("nodes %+v, %v: want the good one alone", nodes, err)
	}
	for dir, n := range map[string]func() (int, error){
		"endpoints": func() (int, error) {
			v, err := datastore.ListAs[datastore.WorkloadEndpoint](ctx, st, datastore.EndpointsDir)
			return len(v), err
		},
		"pools": func() (int, error) {
			v, err := datastore.ListAs[datastore.IPPool](ctx, st, datastore.PoolsDir)
			return len(v), err
		},
		"peers": func() (int, error) {
			v, err := datastore.ListAs[datastore.BGPPeer](ctx, st, datastore.BGPPeersDir)
			return len(v), err
		},
	} {
		if got, err := n(); err != nil || got != 0 {
			t.Errorf("%s: %d listed, %v; want the bad records skipped", dir, got, err)
		}
	}
	var n datastore.Node
	if _, err := st.Get(ctx, datastore.NodeKey("impostor"), &n); !errors.Is(err, datastore.ErrInvalid) {
		t.Fatalf("Get of a record naming another node: %v, want ErrInvalid", err)
	}
	// Collectors still see what a bad endpoint names.
	eps, err := datastore.ListAsUnchecked[datastore.WorkloadEndpoint](ctx, st, datastore.EndpointsDir)
	if err != nil || len(eps) != 2 {
		t.Fatalf("unchecked: %d endpoints, %v; want 2", len(eps), err)
	}
	t.Logf("REPORT\tdatastore\t7 bad records written straight to etcd (garbage, an impostor node, bad addresses, an interface name with nft syntax)\tskipped, the good record listed\tpass")
}
