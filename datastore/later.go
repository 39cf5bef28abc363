package datastore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// laterRetry is how often a queued write is tried again while etcd does
// not answer.
const laterRetry = time.Second

// later is the store's queue of writes that wait for etcd.
type later struct {
	mu      sync.Mutex
	ops     []func(context.Context) error
	running bool
	done    chan struct{} // closed with the store
}

// Later queues op to run once etcd answers again. It is for a write whose
// outcome the caller has already reported to Docker while etcd was
// unreachable: releasing an address Docker gave up, or removing the record
// of an endpoint Docker has deleted. Docker will never ask again, so the
// write must not be lost. Ops run one at a time in the order queued (an
// endpoint's record goes before its address is freed); one failing with
// ErrUnavailable is tried again every second until it succeeds, fails
// otherwise, or the store is closed. Ops hold their own timeouts through
// the store's request timeout.
func (s *Store) Later(op func(ctx context.Context) error) {
	q := &s.later
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ops = append(q.ops, op)
	if !q.running {
		q.running = true
		go s.drain()
	}
}

// NowOrLater runs op now, or queues it behind Later's queue when that queue
// is not empty (so writes keep their order) or when op finds etcd
// unreachable. queued says the write is waiting; err is op's own failure
// otherwise.
func (s *Store) NowOrLater(ctx context.Context, op func(ctx context.Context) error) (queued bool, err error) {
	if s.Pending() == 0 {
		if err = op(ctx); !errors.Is(err, ErrUnavailable) {
			return false, err
		}
	}
	s.Later(op)
	return true, nil
}

// Pending returns how many queued writes still wait for etcd.
func (s *Store) Pending() int {
	s.later.mu.Lock()
	defer s.later.mu.Unlock()
	return len(s.later.ops)
}

func (s *Store) drain() {
	q := &s.later
	for {
		q.mu.Lock()
		if len(q.ops) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		op := q.ops[0]
		q.mu.Unlock()
		if err := op(context.Background()); errors.Is(err, ErrUnavailable) {
			select {
			case <-q.done:
				return
			case <-time.After(laterRetry):
			}
			continue
		}
		q.mu.Lock()
		q.ops = q.ops[1:]
		q.mu.Unlock()
	}
}

func (q *later) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.done:
	default:
		close(q.done)
	}
}
