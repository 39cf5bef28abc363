package etcdtest

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// Proxy forwards connections to the shared etcd and can hold back etcd's
// replies while letting requests through. A request then reaches etcd and
// is applied while its client times out: the fault behind "the transaction
// landed after the caller gave up", which freezing etcd only reproduces by
// chance.
type Proxy struct {
	Endpoint string
	target   string
	ln       net.Listener

	mu     sync.Mutex
	cond   *sync.Cond
	held   [2]bool // by direction: toEtcd, toClient
	closed bool
	conns  []net.Conn
}

// NewProxy starts a proxy to the shared etcd (skipping the test when there
// is none); it is closed when the test ends.
func NewProxy(t testing.TB) *Proxy {
	t.Helper()
	if shared == nil {
		t.Skip("needs a real etcd: " + sharedSkip)
	}
	path := filepath.Join(t.TempDir(), "proxy.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Endpoint: "unix://" + path, target: strings.TrimPrefix(shared.Endpoint, "unix://"), ln: ln}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Store opens a store through the proxy whose requests time out after
// timeout. It shares the key space of NewStore's stores.
func (p *Proxy) Store(t testing.TB, timeout time.Duration) *datastore.Store {
	t.Helper()
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{p.Endpoint}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

const (
	toEtcd = iota
	toClient
)

// HoldReplies keeps every byte etcd sends from reaching the clients until
// Release; requests still reach etcd.
func (p *Proxy) HoldReplies() { p.hold(false, true) }

// Partition holds traffic both ways until Release: etcd sees nothing.
func (p *Proxy) Partition() { p.hold(true, true) }

// Release delivers what was held and lets everything through.
func (p *Proxy) Release() { p.hold(false, false) }

// Cut drops every open connection, with what it held, and lets new ones
// through: clients reconnect and resume their watches.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	// Close before letting held writers go: woken first, they would hand
	// the clients what the cut must drop.
	for _, c := range conns {
		c.Close()
	}
	p.mu.Lock()
	p.held = [2]bool{}
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *Proxy) hold(requests, replies bool) {
	p.mu.Lock()
	p.held = [2]bool{requests, replies}
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("unix", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(gate{p, s, toEtcd}, c); s.Close() }()
		go func() { _, _ = io.Copy(gate{p, c, toClient}, s); c.Close() }()
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

// gate is one side of a connection, written only while its direction is
// not held.
type gate struct {
	p   *Proxy
	c   net.Conn
	dir int
}

func (g gate) Write(b []byte) (int, error) {
	g.p.mu.Lock()
	for g.p.held[g.dir] && !g.p.closed {
		g.p.cond.Wait()
	}
	g.p.mu.Unlock()
	return g.c.Write(b)
}
