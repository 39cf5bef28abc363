package datastore

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// Change is one difference a Cache saw under its prefix: a key written
// (Value set) or removed (Deleted). Rev is the revision that made it.
type Change struct {
	Key     string
	Value   []byte
	Deleted bool
	Rev     int64
}

// Cache mirrors every key under a prefix the way an informer does: it
// lists at a revision, watches from the next one, resumes the watch from
// where it stopped after an outage or a lost leader, and lists again only
// when etcd has compacted the revisions it missed. Its handler sees each
// change once, in revision order, and after a relist only the keys that
// differ from what it had, so a change costs work in proportion to itself,
// not to the cluster.
type Cache struct {
	store  *Store
	prefix string
	handle func(Change)
	// revs knows each key's mod revision: the cache's own map, or its
	// handler's records (the view's), so a large cluster's keys are
	// indexed once.
	revs    keyRevs
	once    sync.Once
	synced  chan struct{}
	retries time.Duration
	// progress, when set, hears every revision the cache has caught up to,
	// including those of changes outside its prefix (progress notices).
	progress func(rev int64)
	// taken is the newest revision the watch applied and its keys taken
	// so far (Run's goroutine only).
	taken struct {
		rev  int64
		keys map[string]bool
	}
	lists atomic.Int64
}

// NewCache makes a cache of prefix whose changes go to handle, called from
// Run's goroutine only.
func (s *Store) NewCache(prefix string, handle func(Change)) *Cache {
	c := &Cache{store: s, prefix: prefix, handle: handle, revs: mapRevs{},
		synced: make(chan struct{}), retries: time.Second}
	c.taken.keys = map[string]bool{}
	return c
}

// Synced is closed once the first listing has gone to the handler.
func (c *Cache) Synced() <-chan struct{} { return c.synced }

// Lists says how often the cache has listed its prefix: once at start, and
// once after each compaction it could not watch across.
func (c *Cache) Lists() int64 { return c.lists.Load() }

// Run keeps the cache current until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	var rev int64 // the last revision applied; 0: list first
	for ctx.Err() == nil {
		if rev == 0 {
			var err error
			if rev, err = c.relist(ctx); err != nil {
				rev = 0
				c.pause(ctx)
				continue
			}
			c.once.Do(func() { close(c.synced) })
		}
		var compacted bool
		rev, compacted = c.watch(ctx, rev)
		if compacted {
			rev = 0
			continue // what was missed is gone from the history: list again now
		}
		c.pause(ctx)
	}
}

func (c *Cache) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(c.retries):
	}
}

// listPage is how many keys one Range of a listing asks for. A large
// cluster's prefix in one response is tens of MB, held twice (the raw
// message and its decoding) while the handler takes it in: a daemon
// restarted into it would need several times its working memory.
const listPage = 500

// relist reads the whole prefix at one revision, a page at a time, and
// hands the handler what changed since the last listing or watch event.
func (c *Cache) relist(ctx context.Context) (int64, error) {
	// A first listing has nothing to delete, so it keeps no record of
	// what it saw.
	var seen map[string]bool
	if c.revs.Len() > 0 {
		seen = map[string]bool{}
	}
	end := clientv3.GetPrefixRangeEnd(c.prefix)
	from, rev := c.prefix, int64(0)
	for {
		resp, err := c.page(ctx, from, end, rev)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision // the later pages are read at it
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if seen != nil {
				seen[k] = true
			}
			if r, ok := c.revs.Rev(k); ok && r == kv.ModRevision {
				continue
			}
			c.revs.Set(k, kv.ModRevision)
			c.handle(Change{Key: k, Value: kv.Value, Rev: kv.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	c.lists.Add(1)
	if seen != nil {
		for _, k := range c.revs.Keys() {
			if !seen[k] {
				c.revs.Forget(k)
				c.handle(Change{Key: k, Deleted: true, Rev: rev})
			}
		}
	}
	if c.progress != nil {
		c.progress(rev)
	}
	return rev, nil
}

// page reads up to listPage keys in [from, end) at rev (0: the newest).
func (c *Cache) page(ctx context.Context, from, end string, rev int64) (*clientv3.GetResponse, error) {
	lctx, cancel := context.WithTimeout(ctx, c.store.timeout)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.store.cli.Get(lctx, from, opts...)
	if err != nil {
		return nil, c.store.wrap(err)
	}
	return resp, nil
}

// watch applies events after rev until the watch ends, and returns the
// last revision applied and whether the watch ended because etcd compacted
// past it.
//
// It reads etcd's watch stream itself rather than through clientv3.Watch,
// which reads every response as soon as it arrives and queues it, decoded,
// until taken: a daemon busy with a burst (20,000 endpoints planted at
// once) held several MB of such responses. Read here only when the last
// one is handled, the stream's flow control holds the backlog in etcd,
// which sends it in fragments of at most its request size limit.
func (c *Cache) watch(ctx context.Context, rev int64) (int64, bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	stream, err := pb.NewWatchClient(c.store.cli.ActiveConnection()).Watch(wctx,
		grpc.WaitForReady(true), grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		return rev, false
	}
	create := &pb.WatchCreateRequest{Key: []byte(c.prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(c.prefix)),
		StartRevision: rev + 1, ProgressNotify: true, Fragment: true}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: create}}); err != nil {
		return rev, false
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return rev, false
		}
		if resp.CompactRevision != 0 {
			return rev, true
		}
		if resp.Canceled {
			return rev, false // a lost leader, or etcd shutting down: watch again
		}
		if resp.Created {
			continue
		}
		var last int64
		for i, ev := range resp.Events {
			// A large backlog comes in one response; each event is let go
			// once handled.
			resp.Events[i] = nil
			last = ev.Kv.ModRevision
			c.apply(ev)
		}
		// A fragment may end inside a revision: the cache has come as far
		// as the last event only when the response is whole. A watch that
		// ends after a fragment resumes before it.
		next := rev
		switch {
		case resp.Fragment:
		case last != 0:
			next = last
		case len(resp.Events) == 0 && resp.Header != nil:
			next = resp.Header.Revision // a progress notice
		}
		if next > rev {
			rev = next
			if c.progress != nil {
				c.progress(rev)
			}
		}
	}
}

// apply hands the handler one watch event it has not seen yet. A watch
// resumed after a fragment replays what the fragment held: events of
// revisions already taken, and of the last one some keys.
func (c *Cache) apply(ev *mvccpb.Event) {
	k, r := string(ev.Kv.Key), ev.Kv.ModRevision
	switch {
	case r < c.taken.rev:
		return
	case r > c.taken.rev:
		c.taken.rev = r
		clear(c.taken.keys)
	case c.taken.keys[k]:
		return
	}
	c.taken.keys[k] = true
	if ev.Type == mvccpb.DELETE {
		if _, ok := c.revs.Rev(k); ok {
			c.revs.Forget(k)
			c.handle(Change{Key: k, Deleted: true, Rev: r})
		}
		return
	}
	c.revs.Set(k, r)
	c.handle(Change{Key: k, Value: ev.Kv.Value, Rev: r})
}

// keyRevs is what a Cache knows of its keys' mod revisions, used from the
// Run goroutine only. Set and Forget come before the handler hears of the
// change.
type keyRevs interface {
	Rev(key string) (int64, bool)
	Set(key string, rev int64)
	Forget(key string)
	Keys() []string
	Len() int
}

// mapRevs is a cache's own index.
type mapRevs map[string]int64

func (m mapRevs) Rev(key string) (int64, bool) { r, ok := m[key]; return r, ok }
func (m mapRevs) Set(key string, rev int64)    { m[key] = rev }
func (m mapRevs) Forget(key string)            { delete(m, key) }
func (m mapRevs) Len() int                     { return len(m) }
func (m mapRevs) Keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
