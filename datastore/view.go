package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
)

// View is a daemon's one copy of the cluster's records (everything under
// Prefix), kept current by one Cache and so by one etcd watch, as Calico's
// Typha fans one watch out to many agents. The loops that used to list etcd
// on each change read the view instead and hear of changes through
// OnChange or Subscribe. A record is decoded and checked once per revision;
// what the view hands out is shared and must not be modified.
type View struct {
	store *Store
	cache *Cache
	mu    sync.Mutex
	recs  *btree.BTreeG[*viewRec] // ordered by key, for prefix ranges
	rev   int64
	moved chan struct{} // closed and replaced whenever rev moves
	subs  []viewSub
	thin  []thinArea
}

// thinArea is a part of the keys whose values the view does not keep (see
// Thin and ThinUnless): those under prefix, but for the keys under except
// (Thin) or the values keep takes (ThinUnless).
type thinArea struct {
	prefix, except string
	keep           func(value []byte) bool
}

// holds reports whether the view keeps the value of key, that value; v.mu
// held.
func (v *View) holds(key string, value []byte) bool {
	for _, a := range v.thin {
		if !strings.HasPrefix(key, a.prefix) {
			continue
		}
		if a.keep != nil && !a.keep(value) || a.keep == nil && !strings.HasPrefix(key, a.except) {
			return false
		}
	}
	return true
}

// holdsAll reports whether the view keeps the values of every key under
// prefix; v.mu held.
func (v *View) holdsAll(prefix string) bool {
	for _, a := range v.thin {
		overlaps := strings.HasPrefix(prefix, a.prefix) || strings.HasPrefix(a.prefix, prefix)
		if overlaps && (a.keep != nil || !strings.HasPrefix(prefix, a.except)) {
			return false
		}
	}
	return true
}

// ErrNotHeld: the view keeps only the keys of the records asked for (see
// Thin); read them from etcd.
var ErrNotHeld = errors.New("the cluster view keeps only the keys of these records")

// Thin makes the view keep only the keys and revisions of the records
// under prefix but not under except, from now on: the records other hosts
// own that this host's subscribers (the policy index, the DNS index) take
// what they need of as they change, so the cluster's records are not held
// twice. Subscribers of prefix must come first: a later one would miss the
// values, and Subscribe panics. Reads of such records find none, and
// ViewListUnchecked says ErrNotHeld.
func (v *View) Thin(prefix, except string) { v.addThin(thinArea{prefix: prefix, except: except}) }

// ThinUnless is Thin for records whose key does not say whose they are (an
// IPAM block names its node inside): under prefix, the view keeps the
// values keep takes, judged at each change. keep may err either way at no
// cost but memory or an etcd read: a reader of a record the view does not
// hold reads etcd.
func (v *View) ThinUnless(prefix string, keep func(value []byte) bool) {
	v.addThin(thinArea{prefix: prefix, keep: keep})
}

func (v *View) addThin(a thinArea) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.thin = append(v.thin, a)
	var drop []*viewRec
	v.ascend(a.prefix, func(r *viewRec) {
		if r.value != nil && !v.holds(r.key, r.raw) {
			drop = append(drop, r)
		}
	})
	for _, r := range drop {
		// A new record, not a changed one: readers outside the lock
		// may still hold r, whose raw never changes.
		v.recs.ReplaceOrInsert(&viewRec{key: r.key, rev: r.rev})
	}
}

// viewRec is one key's record; most of a large cluster's are other hosts'
// records, of which the view keeps the key only, so the value hangs apart.
type viewRec struct {
	key    string
	rev    int64
	*value // nil: the view keeps only the key (Thin)
}

type value struct {
	raw []byte
	val any // the decoded, checked value, once someone has read it
}

// bytes is the record's value, nil when the view keeps only its key.
func (r *viewRec) bytes() []byte {
	if r.value == nil {
		return nil
	}
	return r.raw
}

type viewSub struct {
	prefix string
	fn     func(Change)
}

// NewView makes the view; Run keeps it current.
func (s *Store) NewView() *View {
	v := &View{store: s, moved: make(chan struct{}),
		recs: btree.NewG(32, func(a, b *viewRec) bool { return a.key < b.key })}
	v.cache = s.NewCache(Prefix, v.apply)
	v.cache.progress = v.advance
	v.cache.revs = viewRevs{v}
	return v
}

// viewRevs lets the cache read its keys' revisions from the view's
// records, which the handler (apply) writes: one index of the cluster's
// keys, not two.
type viewRevs struct{ v *View }

func (r viewRevs) Rev(key string) (int64, bool) {
	r.v.mu.Lock()
	defer r.v.mu.Unlock()
	rec, ok := r.v.recs.Get(&viewRec{key: key})
	if !ok {
		return 0, false
	}
	return rec.rev, true
}

func (viewRevs) Set(string, int64) {} // apply records it
func (viewRevs) Forget(string)     {} // apply removes it

func (r viewRevs) Keys() []string { return r.v.Keys("") }

func (r viewRevs) Len() int {
	r.v.mu.Lock()
	defer r.v.mu.Unlock()
	return r.v.recs.Len()
}

// Run keeps the view current until ctx ends.
func (v *View) Run(ctx context.Context) { v.cache.Run(ctx) }

// Synced is closed once the view holds a whole listing.
func (v *View) Synced() <-chan struct{} { return v.cache.Synced() }

// Lists says how often the view has listed etcd (see Cache.Lists).
func (v *View) Lists() int64 { return v.cache.Lists() }

// Rev is the etcd revision the view has caught up to.
func (v *View) Rev() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev
}

// Wait returns once the view holds everything up to revision rev (0: the
// first listing), or fails when ctx ends first. A request that has just
// written to etcd waits for its own write this way before reading the view.
func (v *View) Wait(ctx context.Context, rev int64) error {
	for {
		v.mu.Lock()
		at, moved := v.rev, v.moved
		v.mu.Unlock()
		if at >= rev && at > 0 {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("the cluster view is at revision %d, waiting for %d: %w", at, rev, ErrUnavailable)
		}
	}
}

// Subscribe calls fn with every change under prefix, after the view holds
// it, from the goroutine that keeps the view: fn must not block nor call
// the view. What the view holds already under prefix is handed to fn first,
// as changes, before Subscribe returns; so a subscriber that comes late
// misses nothing, and sees nothing twice.
func (v *View) Subscribe(prefix string, fn func(Change)) { v.subscribe(prefix, fn, true) }

// subscribe is Subscribe; a subscriber that needs no values (OnChange's
// kicks) may come after Thin.
func (v *View) subscribe(prefix string, fn func(Change), values bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if values && !v.holdsAll(prefix) {
		panic("datastore: Subscribe to " + prefix + " after Thin: the subscriber would miss the values")
	}
	v.ascend(prefix, func(r *viewRec) { fn(Change{Key: r.key, Value: r.bytes(), Rev: r.rev}) })
	v.subs = append(v.subs, viewSub{prefix: prefix, fn: fn})
}

// OnChange runs fn once the view is synced, then again after changes under
// any of prefixes or a signal on also (nil: none; a burst makes one run)
// and every resync, until ctx ends. The loops that recompute state from the
// records are built on it; they read the view, so a run costs no etcd
// request.
func (v *View) OnChange(ctx context.Context, prefixes []string, resync time.Duration, also <-chan struct{}, fn func()) {
	kick := make(chan struct{}, 1)
	for _, p := range prefixes {
		v.subscribe(p, func(Change) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}, false)
	}
	select {
	case <-v.Synced():
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-also:
		case <-tick.C:
		}
	}
}

func (v *View) apply(ch Change) {
	v.mu.Lock()
	switch {
	case ch.Deleted:
		v.recs.Delete(&viewRec{key: ch.Key})
	case v.holds(ch.Key, ch.Value):
		v.recs.ReplaceOrInsert(&viewRec{key: ch.Key, rev: ch.Rev, value: &value{raw: ch.Value}})
	default:
		v.recs.ReplaceOrInsert(&viewRec{key: ch.Key, rev: ch.Rev})
	}
	var fns []func(Change)
	for _, s := range v.subs {
		if strings.HasPrefix(ch.Key, s.prefix) {
			fns = append(fns, s.fn)
		}
	}
	v.mu.Unlock()
	for _, fn := range fns {
		fn(ch)
	}
}

func (v *View) advance(rev int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if rev > v.rev {
		v.rev = rev
		close(v.moved)
		v.moved = make(chan struct{})
	}
}

// decode returns r's value as T, decoding and checking it on first use;
// a bad record is skipped with one warning per revision.
func decode[T any](v *View, r *viewRec) (T, bool) {
	if r.value == nil {
		var t T
		return t, false
	}
	if t, ok := r.val.(T); ok {
		return t, true
	}
	t, ok := decodeRaw[T](v, r)
	if ok {
		r.val = t
	}
	return t, ok
}

// decodeRaw decodes and checks r's stored bytes; a bad record is skipped
// with one warning per revision.
func decodeRaw[T any](v *View, r *viewRec) (T, bool) {
	t, err := Decode[T](r.key, r.raw)
	if err != nil {
		v.store.skipped(KV{Key: r.key, Rev: r.rev}, err)
		return t, false
	}
	return t, true
}

// Decode decodes and checks one record as a subscriber receives it; a bad
// one is ErrInvalid.
func Decode[T any](key string, value []byte) (T, error) {
	var t T
	if err := json.Unmarshal(value, &t); err != nil {
		return t, fmt.Errorf("decode %s: %w: %v", key, ErrInvalid, err)
	}
	return t, checkRecord(key, &t)
}

// ViewList returns the valid records under prefix, in key order.
func ViewList[T any](v *View, prefix string) []T {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []T
	v.ascend(prefix, func(r *viewRec) {
		if t, ok := decode[T](v, r); ok {
			out = append(out, t)
		}
	})
	return out
}

// ViewGet returns the record at key and its mod revision; ok is false when
// there is none or it is not valid.
func ViewGet[T any](v *View, key string) (t T, rev int64, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, found := v.recs.Get(&viewRec{key: key})
	if !found {
		return t, 0, false
	}
	t, ok = decode[T](v, r)
	return t, r.rev, ok
}

// Raw returns the record at key as etcd holds it, with its mod revision;
// ErrNotFound when there is none, ErrNotHeld when the view keeps only its
// key (read it from etcd).
func (v *View) Raw(key string) (KV, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, ok := v.recs.Get(&viewRec{key: key})
	switch {
	case !ok:
		return KV{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	case r.value == nil:
		return KV{}, fmt.Errorf("%s: %w", key, ErrNotHeld)
	}
	return KV{Key: r.key, Value: r.raw, Rev: r.rev}, nil
}

// Fetch is Raw, reading etcd for a record the view keeps only the key of.
func (v *View) Fetch(ctx context.Context, key string) (KV, error) {
	kv, err := v.Raw(key)
	if !errors.Is(err, ErrNotHeld) {
		return kv, err
	}
	resp, err := v.store.read(ctx, key)
	if err != nil {
		return KV{}, err
	}
	if len(resp.Kvs) == 0 {
		return KV{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return KV{Key: key, Value: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}, nil
}

// ViewListUnchecked is ListAsUnchecked from the view: every record under
// prefix decoded, checked or not (a reader that must act on a record even
// when it would not be used, as the start-up reconcile keeps its interface);
// one that does not decode at all is an error.
func ViewListUnchecked[T any](v *View, prefix string) ([]T, error) {
	v.mu.Lock()
	held := v.holdsAll(prefix)
	v.mu.Unlock()
	if !held {
		return nil, fmt.Errorf("list %s: %w", prefix, ErrNotHeld)
	}
	var out []T
	for _, kv := range v.List(prefix) {
		var t T
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("decode %s: %w: %v", kv.Key, ErrInvalid, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// List returns the raw records under prefix with their mod revisions, as
// Store.List does, for a reader that compares revisions in a transaction.
func (v *View) List(prefix string) []KV {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []KV
	v.ascend(prefix, func(r *viewRec) {
		if r.value != nil {
			out = append(out, KV{Key: r.key, Value: r.raw, Rev: r.rev})
		}
	})
	return out
}

// CatchUp waits until the view holds every write made to etcd before the
// call: one small request to learn etcd's revision, then the watch's pace.
func (v *View) CatchUp(ctx context.Context) error {
	rev, err := v.store.Revision(ctx)
	if err != nil {
		return err
	}
	return v.Wait(ctx, rev)
}

// Keys returns the keys under prefix, valid or not, in order.
func (v *View) Keys(prefix string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	v.ascend(prefix, func(r *viewRec) { out = append(out, r.key) })
	return out
}

// ascend visits the records under prefix; v.mu must be held.
func (v *View) ascend(prefix string, fn func(*viewRec)) {
	v.recs.AscendGreaterOrEqual(&viewRec{key: prefix}, func(r *viewRec) bool {
		if !strings.HasPrefix(r.key, prefix) {
			return false
		}
		fn(r)
		return true
	})
}
