// Package datastore keeps tabby's state in etcd v3: typed JSON resources under
// one prefix, read-modify-write by compare-and-swap on mod revision, and
// watches. It is the only package that imports the etcd client, and the place
// where the driver, IPAM and BGP packages meet.
package datastore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

var (
	// ErrNotFound means the key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a compare-and-swap lost: someone else wrote first.
	ErrConflict = errors.New("datastore conflict")
	// ErrUnavailable means etcd could not be reached.
	ErrUnavailable = errors.New("datastore unreachable")
)

// MaxRetries bounds every read-modify-write loop; only conflicts are retried.
const MaxRetries = 20

// Config says how to reach etcd.
type Config struct {
	Endpoints []string
	CAFile    string
	CertFile  string
	KeyFile   string
	// Timeout bounds each request, so an outage surfaces as an error quickly.
	Timeout time.Duration
	// Log gets a warning for each stored record a listing skips (nil:
	// slog's default).
	Log *slog.Logger
}

// Store is a typed view of tabby's keys in etcd.
type Store struct {
	cli     *clientv3.Client
	timeout time.Duration
	later   later
	log     *slog.Logger

	requests *requestCounter

	badMu sync.Mutex
	bad   map[string]int64 // skipped record → the revision last warned about
}

// Open connects to etcd and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints: set ETCD_ENDPOINTS or leave it empty for the embedded etcd")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	var tlsCfg *tls.Config
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd TLS files (ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE): %w", err)
		}
	}
	requests := &requestCounter{}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.Timeout,
		TLS:         tlsCfg,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(requests.interceptor())},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w: %w", strings.Join(cfg.Endpoints, ","), ErrUnavailable, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Store{cli: cli, timeout: cfg.Timeout, later: later{done: make(chan struct{})}, log: cfg.Log, requests: requests}
	if err := s.Ping(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the connection.
func (s *Store) Close() error {
	s.later.close()
	return s.cli.Close()
}

// Ping checks that etcd answers within the request timeout.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.cli.Get(ctx, Prefix+"ping"); err != nil {
		return s.wrap(err)
	}
	return nil
}

func (s *Store) wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || leaderLost(err) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "Unavailable") {
		return fmt.Errorf("etcd %s: %w (%v); check that etcd runs and ETCD_ENDPOINTS points at it",
			strings.Join(s.cli.Endpoints(), ","), ErrUnavailable, err)
	}
	if isFull(err) {
		return fmt.Errorf("etcd %s: %w: %s (%v)", strings.Join(s.cli.Endpoints(), ","), ErrFull, fullHelp, err)
	}
	return fmt.Errorf("etcd: %w", err)
}

// leaderLost reports whether etcd refused or dropped a request because its
// cluster has no leader or has just lost it.
func leaderLost(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToConnectionLost} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Settle bounds how long a request rides out an etcd cluster's election.
const Settle = 10 * time.Second

// Electing reports whether err is worth sending the same request again: etcd
// was choosing a leader or had just lost it, or, with several members, the
// one asked went away (the client moves to another). A single etcd that
// does not answer is an outage, and fails at once.
func (s *Store) Electing(err error) bool {
	return leaderLost(err) || (len(s.cli.Endpoints()) > 1 && errors.Is(err, ErrUnavailable))
}

// Again runs a request that is safe to send twice until it does not fail
// for an election, for at most Settle, pausing briefly between tries.
func (s *Store) Again(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(Settle)
	for {
		err := fn(ctx)
		if err == nil || !s.Electing(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// read is one range request, sent again through an election.
func (s *Store) read(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	var resp *clientv3.GetResponse
	err := s.Again(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		var err error
		resp, err = s.cli.Get(ctx, key, opts...)
		return s.wrap(err)
	})
	return resp, err
}

// Get reads one resource into v and returns its mod revision.
func (s *Store) Get(ctx context.Context, key string, v any) (int64, error) {
	resp, err := s.read(ctx, key)
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("decode %s: %w: %v", key, ErrInvalid, err)
	}
	if err := checkRecord(key, v); err != nil {
		return 0, err
	}
	return resp.Kvs[0].ModRevision, nil
}

// KV is one raw entry of a List.
type KV struct {
	Key   string
	Value []byte
	Rev   int64
}

// List returns every entry under a prefix.
func (s *Store) List(ctx context.Context, prefix string) ([]KV, error) {
	resp, err := s.read(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, KV{Key: string(kv.Key), Value: kv.Value, Rev: kv.ModRevision})
	}
	return out, nil
}

// ListKeys returns the keys under a prefix, without values.
func (s *Store) ListKeys(ctx context.Context, prefix string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, s.wrap(err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out, nil
}

// ListAs decodes every entry under a prefix as T. A record that does not
// decode or check is skipped with a warning (once per revision of it): one
// bad record never blocks the others.
func ListAs[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
	return listAs[T](ctx, s, prefix, true)
}

// ListAsUnchecked decodes every entry under a prefix as T without checking
// it, and fails on one that does not decode. Collectors read with it: what
// a record names is kept, even when the record would not be used.
func ListAsUnchecked[T any](ctx context.Context, s *Store, prefix string) ([]T, error) {
	return listAs[T](ctx, s, prefix, false)
}

func listAs[T any](ctx context.Context, s *Store, prefix string, checked bool) ([]T, error) {
	kvs, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		err := json.Unmarshal(kv.Value, &v)
		if err != nil {
			err = fmt.Errorf("decode %s: %w: %v", kv.Key, ErrInvalid, err)
			if !checked {
				return nil, err
			}
		} else if checked {
			err = checkRecord(kv.Key, &v)
		}
		if err != nil {
			s.skipped(kv, err)
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// skipped warns of a bad record, once per revision of it.
func (s *Store) skipped(kv KV, err error) {
	s.badMu.Lock()
	defer s.badMu.Unlock()
	if s.bad[kv.Key] == kv.Rev {
		return
	}
	if s.bad == nil || len(s.bad) > 10000 {
		s.bad = map[string]int64{}
	}
	s.bad[kv.Key] = kv.Rev
	s.log.Warn("stored record skipped", "key", kv.Key, "err", err)
}

// Op is one write of an atomic Commit.
type Op struct {
	Key string
	// Value is JSON-encoded; nil deletes the key.
	Value any
	// Rev is the mod revision the key must still have: 0 means it must not
	// exist, Any skips the check.
	Rev int64
	// CheckOnly compares Rev without writing the key.
	CheckOnly bool
}

// Any, as an Op's Rev, writes whatever the key holds.
const Any int64 = -1

// Commit applies all ops atomically, or none with ErrConflict when one of the
// compared revisions moved.
func (s *Store) Commit(ctx context.Context, ops ...Op) error {
	_, err := s.CommitRev(ctx, ops...)
	return err
}

// CommitRev is Commit that also returns the revision of the transaction,
// which is the new mod revision of every key it wrote.
func (s *Store) CommitRev(ctx context.Context, ops ...Op) (int64, error) {
	var cmps []clientv3.Cmp
	var thens []clientv3.Op
	for _, op := range ops {
		if op.Rev != Any {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
		}
		if op.CheckOnly {
			continue
		}
		if op.Value == nil {
			thens = append(thens, clientv3.OpDelete(op.Key))
			continue
		}
		b, err := json.Marshal(op.Value)
		if err != nil {
			return 0, fmt.Errorf("encode %s: %w", op.Key, err)
		}
		thens = append(thens, clientv3.OpPut(op.Key, string(b)))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(thens...).Commit()
	if err != nil {
		return 0, s.wrap(err)
	}
	if !resp.Succeeded {
		return 0, ErrConflict
	}
	return resp.Header.Revision, nil
}

// Revision returns etcd's current revision: a View that has waited for it
// holds every write made before the call.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, bgpConfigKey, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.wrap(err)
	}
	return resp.Header.Revision, nil
}

// Create writes a new resource; ErrConflict if the key exists.
func (s *Store) Create(ctx context.Context, key string, v any) error {
	return s.Commit(ctx, Op{Key: key, Value: v, Rev: 0})
}

// Put writes a resource unconditionally (sent again through an election:
// the same write twice is one).
func (s *Store) Put(ctx context.Context, key string, v any) error {
	return s.Again(ctx, func(ctx context.Context) error { return s.Commit(ctx, Op{Key: key, Value: v, Rev: Any}) })
}

// Delete removes a key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.Again(ctx, func(ctx context.Context) error { return s.Commit(ctx, Op{Key: key, Rev: Any}) })
}

// Update reads key into a fresh T, applies fn and writes it back with a CAS,
// retrying only on conflict. A missing key reaches fn as the zero T with
// exists=false. A value fn leaves as it was is not written: a no-op write
// would wake every watcher in the cluster for nothing.
func Update[T any](ctx context.Context, s *Store, key string, fn func(v *T, exists bool) error) error {
	// A write lost in an election is read again like a conflict: if it was
	// applied, fn finds nothing left to change.
	return s.Again(ctx, func(ctx context.Context) error { return update(ctx, s, key, fn) })
}

func update[T any](ctx context.Context, s *Store, key string, fn func(v *T, exists bool) error) error {
	for i := 0; i < MaxRetries; i++ {
		var v T
		rev, err := s.Get(ctx, key, &v)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		before, _ := json.Marshal(&v)
		if err := fn(&v, exists); err != nil {
			return err
		}
		if after, _ := json.Marshal(&v); exists && bytes.Equal(before, after) {
			return nil
		}
		err = s.Commit(ctx, Op{Key: key, Value: &v, Rev: rev})
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%s: %w after %d attempts", key, ErrConflict, MaxRetries)
}

// RawCAS does one compare-and-swap transaction on key, the unit the IPAM
// benchmark compares itself against.
func (s *Store) RawCAS(ctx context.Context, key string, rev int64, value string) (int64, error) {
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, value)).Commit()
	if err != nil {
		return 0, s.wrap(err)
	}
	if !resp.Succeeded {
		return 0, ErrConflict
	}
	return resp.Header.Revision, nil
}

// DeletePrefix removes every key under prefix (tests and uninstall only).
func (s *Store) DeletePrefix(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.cli.Delete(ctx, prefix, clientv3.WithPrefix())
	return s.wrap(err)
}

// KeepAlive holds key (with value) under a lease of ttlOf() seconds until
// ctx ends, so the key vanishes about that long after this process stops
// answering. A lost lease (etcd restarted, an outage longer than the TTL)
// is taken again. ttlOf is asked again after each signal on recheck (a
// watch on what it reads, and on the key itself); a changed TTL moves the
// key to a new lease before the old one is revoked, so the key never
// lapses, and an unchanged one writes the key again under the same lease,
// so a deleted key comes back.
func (s *Store) KeepAlive(ctx context.Context, key, value string, ttlOf func() int64, recheck <-chan struct{}) {
	var old clientv3.LeaseID
	for ctx.Err() == nil {
		next, err := s.holdLease(ctx, key, value, ttlOf, recheck, old)
		old = next
		if err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// holdLease puts key under a new lease, revokes prev, and keeps the lease
// alive until it is lost (returns 0) or the TTL changes (returns the lease,
// for the next round to revoke).
func (s *Store) holdLease(ctx context.Context, key, value string, ttlOf func() int64, recheck <-chan struct{}, prev clientv3.LeaseID) (clientv3.LeaseID, error) {
	ttl := ttlOf()
	gctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	lease, err := s.cli.Grant(gctx, ttl)
	if err == nil {
		_, err = s.cli.Put(gctx, key, value, clientv3.WithLease(lease.ID))
	}
	if err != nil {
		return prev, s.wrap(err)
	}
	if prev != 0 {
		_, _ = s.cli.Revoke(gctx, prev)
	}
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	ch, err := s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return 0, s.wrap(err)
	}
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return 0, ErrUnavailable
			}
		case <-recheck:
			if ttlOf() != ttl {
				return lease.ID, nil
			}
			pctx, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := s.cli.Put(pctx, key, value, clientv3.WithLease(lease.ID))
			cancel()
			if err != nil {
				return lease.ID, s.wrap(err)
			}
		}
	}
}
