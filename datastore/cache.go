package datastore

import (
	"bytes"
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Change is one difference a Cache saw under its prefix: a key written
// (Value set) or removed (Deleted).
type Change struct {
	Key     string
	Value   []byte
	Deleted bool
}

// Cache mirrors every key under a prefix the way an informer does: it
// lists at a revision, watches from the next one, and lists again only when
// the watch ends (compaction, a lost leader, an outage). Its handler sees
// each change once, in revision order, and after a relist only the keys
// that differ from what it had, so a change costs work in proportion to
// itself, not to the cluster.
type Cache struct {
	store   *Store
	prefix  string
	handle  func(Change)
	items   map[string][]byte // the Run goroutine's alone
	once    sync.Once
	synced  chan struct{}
	retries time.Duration
}

// NewCache makes a cache of prefix whose changes go to handle, called from
// Run's goroutine only.
func (s *Store) NewCache(prefix string, handle func(Change)) *Cache {
	return &Cache{store: s, prefix: prefix, handle: handle, items: map[string][]byte{},
		synced: make(chan struct{}), retries: time.Second}
}

// Synced is closed once the first listing has gone to the handler.
func (c *Cache) Synced() <-chan struct{} { return c.synced }

// Run keeps the cache current until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := c.relist(ctx)
		if err == nil {
			c.once.Do(func() { close(c.synced) })
			c.watch(ctx, rev+1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(c.retries):
		}
	}
}

// relist reads the whole prefix at one revision and hands the handler what
// changed since the last listing or watch event.
func (c *Cache) relist(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, c.store.timeout)
	defer cancel()
	resp, err := c.store.cli.Get(lctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, c.store.wrap(err)
	}
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		seen[k] = true
		if old, ok := c.items[k]; ok && bytes.Equal(old, kv.Value) {
			continue
		}
		c.items[k] = kv.Value
		c.handle(Change{Key: k, Value: kv.Value})
	}
	for k := range c.items {
		if !seen[k] {
			delete(c.items, k)
			c.handle(Change{Key: k, Deleted: true})
		}
	}
	return resp.Header.Revision, nil
}

// watch applies events from rev on until the watch ends for any reason.
func (c *Cache) watch(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range c.store.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
		if resp.Err() != nil || resp.CompactRevision != 0 {
			return
		}
		for _, ev := range resp.Events {
			k := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				if _, ok := c.items[k]; ok {
					delete(c.items, k)
					c.handle(Change{Key: k, Deleted: true})
				}
				continue
			}
			c.items[k] = ev.Kv.Value
			c.handle(Change{Key: k, Value: ev.Kv.Value})
		}
	}
}
