package datastore

import (
	"context"
	"path"
	"sync"

	"google.golang.org/grpc"
)

// requestCounter counts the etcd calls a store makes, by gRPC method
// (Range, Txn, LeaseGrant...): what a daemon costs etcd, seen from the
// daemon.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *requestCounter) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int64{}
		}
		c.n[path.Base(method)]++
		c.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// Requests returns how many etcd calls of each method the store has made.
func (s *Store) Requests() map[string]int64 {
	s.requests.mu.Lock()
	defer s.requests.mu.Unlock()
	out := make(map[string]int64, len(s.requests.n))
	for k, v := range s.requests.n {
		out[k] = v
	}
	return out
}
