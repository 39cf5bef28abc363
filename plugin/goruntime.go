package plugin

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// goRuntime applies FelixConfiguration's goGCThreshold and goMemoryLimitMB
// to this daemon, as Felix does its own: most of a loaded daemon's heap is
// the cluster's records, live for its whole life, so Go's default of
// letting the heap double before a collection is mostly empty room.
type goRuntime struct {
	node string
	log  *slog.Logger

	mu          sync.Mutex
	gc, limitMB int // what is applied; 0: nothing yet
}

// apply sets the runtime from the configs, logging what changes.
func (g *goRuntime) apply(configs []datastore.FelixConfiguration) {
	gc, limitMB := datastore.GoRuntime(g.node, configs)
	if gc == -1 && limitMB <= 0 {
		// -1 alone (a node's -1, the cluster's limit removed since)
		// would let the heap grow without bound.
		g.log.Warn("goGCThreshold -1 without goMemoryLimitMB: using the default", "node", g.node, "gogc", datastore.DefaultGoGC)
		gc = datastore.DefaultGoGC
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if gc == g.gc && limitMB == g.limitMB {
		return
	}
	g.gc, g.limitMB = gc, limitMB
	debug.SetGCPercent(gc)
	limit := int64(math.MaxInt64) // the runtime's "no limit"
	if limitMB > 0 {
		limit = int64(limitMB) << 20
	}
	debug.SetMemoryLimit(limit)
	g.log.Info("Go runtime set from FelixConfiguration", "node", g.node, "gogc", gc, "memory_limit_mb", limitMB)
}

// keep applies the settings now and after each FelixConfiguration change.
func (g *goRuntime) keep(ctx context.Context, view *datastore.View) {
	view.OnChange(ctx, []string{datastore.FelixConfigDir}, time.Minute, nil, func() {
		g.apply(datastore.ViewList[datastore.FelixConfiguration](view, datastore.FelixConfigDir))
	})
}
