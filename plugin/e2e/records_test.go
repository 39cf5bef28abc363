package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// What a daemon keeps in etcd comes back when someone deletes it: its
// liveness key (else its peers would drop its sessions), and a live node
// cannot be deleted from under its daemon.
func TestRecordsOfALiveNode(t *testing.T) {
	const fault = "records of a live node"
	l := lab.New(t, lab.Options{Hosts: 1, NoDocker: true})
	n0 := l.Hosts[0]
	st := labStore(t, l)
	ctx := context.Background()
	key := datastore.LivenessKey(n0.Name)
	eventually(t, 15*time.Second, "the daemon holds its liveness key", func() (string, bool) {
		keys, err := st.ListKeys(ctx, key)
		return strings.Join(keys, ","), err == nil && len(keys) == 1
	})
	rev, err := st.CommitRev(ctx, datastore.Op{Key: key, Rev: datastore.Any}) // the delete
	if err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var back time.Duration
	eventually(t, 15*time.Second, "the liveness key is written again", func() (string, bool) {
		kvs, err := st.List(ctx, key)
		if err == nil && len(kvs) == 1 && kvs[0].Rev > rev && back == 0 {
			back = time.Since(deleted)
		}
		return fmt.Sprint(kvs), back > 0
	})
	report(t, fault, "liveness key deleted by hand", "back after "+back.Round(time.Millisecond).String(), back < 5*time.Second)
	out, err := n0.Tabby("delete", "node", n0.Name)
	var n datastore.Node
	_, gerr := st.Get(ctx, datastore.NodeKey(n0.Name), &n)
	report(t, fault, "tabby delete node of a live node", firstLine(out, "alive"),
		err != nil && strings.Contains(out, "is alive") && !errors.Is(gerr, datastore.ErrNotFound))
}
