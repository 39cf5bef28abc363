package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// freePort returns a loopback port with the next one free too (the
// embedded etcd's peer port).
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1)); err == nil {
			ln2.Close()
			return port
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}

// History that grows to the quota makes etcd refuse writes: the error says
// so and what to do, and Maintain (the daemon's, for its embedded etcd)
// compacts, defragments and disarms, after which writes work again.
func TestEmbeddedEtcdComesBackFromAFullQuota(t *testing.T) {
	const quota = 8 << 20
	emb, err := datastore.StartEmbedded(datastore.EmbeddedConfig{Dir: t.TempDir(),
		ClientAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), QuotaBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx := context.Background()
	st, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{emb.Endpoint}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One key rewritten until the history fills the quota (no compaction
	// has run: the embedded etcd keeps 10 minutes).
	big := strings.Repeat("x", 256<<10)
	var full error
	for i := 0; i < 200 && full == nil; i++ {
		full = st.Put(ctx, datastore.Prefix+"filler", big)
	}
	if !errors.Is(full, datastore.ErrFull) || !strings.Contains(full.Error(), "etcdctl alarm disarm") {
		t.Fatalf("writes into a full etcd: %v; want ErrFull naming the way out", full)
	}
	stats, err := st.DBStats(ctx)
	if err != nil || len(stats) != 1 || !stats[0].Full || stats[0].Size < quota/2 {
		t.Fatalf("stats of a full etcd: %+v %v", stats, err)
	}
	t.Logf("REPORT\tdatastore\tembedded etcd at its %d MiB quota\twrites refused with ErrFull; %d bytes", quota>>20, stats[0].Size)
	did, err := st.Maintain(ctx, 1<<20)
	if err != nil {
		t.Fatalf("maintain: %v (did %s)", err, did)
	}
	if err := st.Put(ctx, datastore.Prefix+"after", "small"); err != nil {
		t.Fatalf("a write after maintenance (%s): %v", did, err)
	}
	after, err := st.DBStats(ctx)
	if err != nil || after[0].Full || after[0].Size >= stats[0].Size/2 {
		t.Fatalf("after maintenance (%s): %+v %v; want the alarm gone and the file shrunk from %d", did, after, err, stats[0].Size)
	}
	t.Logf("REPORT\tdatastore\tmaintenance of a full embedded etcd\t%s; file %d -> %d bytes, writes work\tpass", did, stats[0].Size, after[0].Size)
	// Nothing to do on a healthy member.
	if did, err := st.Maintain(ctx, 1<<20); err != nil || did != "" {
		t.Fatalf("maintain on a healthy etcd did %q (%v)", did, err)
	}
}
