package plugin

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/tabbynet/tabby/datastore"
)

// The daemon's Go runtime follows FelixConfiguration: Felix's default with
// none, a node's own setting over the cluster's, and back when removed.
func TestGoRuntimeFollowsFelixConfiguration(t *testing.T) {
	gc0 := debug.SetGCPercent(100)
	lim0 := debug.SetMemoryLimit(-1)
	defer func() { debug.SetGCPercent(gc0); debug.SetMemoryLimit(lim0) }()
	n := func(v int) *int { return &v }
	g := &goRuntime{node: "a", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	check := func(what string, gc int, limit int64) {
		t.Helper()
		if got := debug.SetGCPercent(-1); got != gc {
			t.Errorf("%s: GOGC %d, want %d", what, got, gc)
		}
		debug.SetGCPercent(gc)
		if got := debug.SetMemoryLimit(-1); got != limit {
			t.Errorf("%s: memory limit %d, want %d", what, got, limit)
		}
	}
	g.apply(nil)
	check("no FelixConfiguration", datastore.DefaultGoGC, math.MaxInt64)
	g.apply([]datastore.FelixConfiguration{{Name: "default", GoGCThreshold: n(80)}, {Name: "node.a", GoMemoryLimitMB: n(64)}})
	check("cluster 80, node limit 64", 80, 64<<20)
	g.apply([]datastore.FelixConfiguration{{Name: "node.a", GoGCThreshold: n(-1)}}) // the limit went
	check("a node's -1 without a limit", datastore.DefaultGoGC, math.MaxInt64)
}
