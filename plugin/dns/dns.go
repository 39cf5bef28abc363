// Package dns is tabby's cluster name resolver. Modern Docker knows only the
// containers of its own daemon; each tabby daemon answers A and AAAA queries
// for every workload endpoint in etcd, as NAME and NAME.NETWORK, to
// containers that share a network with the target, and forwards every other
// query to the host's upstream resolvers. Docker's embedded resolver
// forwards what it does not know to the daemon's --dns servers from inside
// the asking container's namespace, so the query's source address says who
// asks. It answers only this host's containers (anyone else is REFUSED,
// so it is no open resolver), and a container name that the asker shares
// no network with is asked upstream like any name (so a container named
// like a real domain cannot hide it from others).
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/tabbynet/tabby/datastore"
)

// record is one endpoint as DNS sees it.
type record struct {
	name, network string
	addrs         []netip.Addr
}

// Index answers lookups from a snapshot of the endpoints. Pure, so the
// rules (shared networks, NAME.NETWORK) are tested without sockets.
type Index struct {
	byName map[string][]record     // lower-case container name
	nets   map[netip.Addr][]string // an endpoint address -> its networks
	local  map[netip.Addr]bool     // the addresses of node's endpoints
}

// NewIndex indexes endpoints; networkOf gives an endpoint's network name,
// node is this host's (whose containers may ask).
func NewIndex(eps []datastore.WorkloadEndpoint, networkOf func(datastore.WorkloadEndpoint) string, node string) *Index {
	ix := &Index{byName: map[string][]record{}, nets: map[netip.Addr][]string{}, local: map[netip.Addr]bool{}}
	for _, e := range eps {
		r := record{name: strings.ToLower(e.Workload), network: strings.ToLower(networkOf(e))}
		r.addrs = e.Addrs()
		for _, a := range r.addrs {
			ix.nets[a] = append(ix.nets[a], r.network)
			if e.Node == node {
				ix.local[a] = true
			}
		}
		if r.name != "" {
			ix.byName[r.name] = append(ix.byName[r.name], r)
		}
		// An alias (a Compose service) names every replica that has it:
		// one record each, on whichever host.
		for _, a := range e.Aliases {
			if a = strings.ToLower(a); a != "" && a != r.name {
				ar := r
				ar.name = a
				ix.byName[a] = append(ix.byName[a], ar)
			}
		}
	}
	return ix
}

// Local reports whether asker is a container of this host.
func (ix *Index) Local(asker netip.Addr) bool { return ix.local[asker.Unmap()] }

// Lookup resolves qname (NAME or NAME.NETWORK) for the container at asker.
// cluster reports whether qname names a workload at all; addrs are the
// addresses in networks asker shares with it.
func (ix *Index) Lookup(asker netip.Addr, qname string) (addrs []netip.Addr, cluster bool) {
	q := strings.TrimSuffix(strings.ToLower(qname), ".")
	name, network := q, ""
	if _, ok := ix.byName[name]; !ok {
		if i := strings.IndexByte(q, '.'); i > 0 {
			name, network = q[:i], q[i+1:]
		}
	}
	recs, ok := ix.byName[name]
	if !ok {
		return nil, false
	}
	shared := map[string]bool{}
	for _, n := range ix.nets[asker.Unmap()] {
		shared[n] = true
	}
	matched := false
	for _, r := range recs {
		if network != "" && r.network != network {
			continue
		}
		matched = true
		if shared[r.network] {
			addrs = append(addrs, r.addrs...)
		}
	}
	return addrs, matched
}

// Server answers DNS on one address.
type Server struct {
	node      string
	view      *datastore.View
	upstreams []string
	networkOf func(datastore.WorkloadEndpoint) string
	log       *slog.Logger
	index     atomic.Pointer[Index]
	client    *mdns.Client
}

// New returns a resolver that forwards to upstreams (host:port).
// node is this host's name: only its containers are answered.
func New(view *datastore.View, upstreams []string, networkOf func(datastore.WorkloadEndpoint) string, node string, log *slog.Logger) *Server {
	s := &Server{node: node, view: view, upstreams: upstreams, networkOf: networkOf, log: log,
		client: &mdns.Client{Timeout: 2 * time.Second}}
	s.index.Store(NewIndex(nil, networkOf, node))
	return s
}

// Upstreams reads the host's resolvers from resolv.conf, leaving out self.
func Upstreams(path string, self ...string) ([]string, error) {
	cfg, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream resolvers from %s: %w", path, err)
	}
	var out []string
	for _, s := range cfg.Servers {
		hp := net.JoinHostPort(s, cfg.Port)
		if !slices.Contains(self, hp) {
			out = append(out, hp)
		}
	}
	return out, nil
}

// Run serves UDP and TCP on each of addrs until ctx ends, keeping the index
// current from the cluster view. It returns once every listener is open, or an
// error (and then none stays open).
func (s *Server) Run(ctx context.Context, resync time.Duration, addrs ...string) error {
	var servers []*mdns.Server
	h := mdns.HandlerFunc(s.serve)
	for _, addr := range addrs {
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				servers = append(servers, &mdns.Server{PacketConn: pc, Handler: h}, &mdns.Server{Listener: ln, Handler: h})
				continue
			}
			pc.Close()
		}
		for _, srv := range servers {
			if srv.PacketConn != nil {
				srv.PacketConn.Close()
			} else {
				srv.Listener.Close()
			}
		}
		return fmt.Errorf("DNS on %s (--dns-addr): %w", addr, err)
	}
	go s.view.OnChange(ctx, []string{datastore.EndpointsDir, datastore.NetworksDir}, resync, nil, s.refresh)
	for _, srv := range servers {
		go srv.ActivateAndServe()
	}
	go func() {
		<-ctx.Done()
		for _, srv := range servers {
			srv.Shutdown()
		}
	}()
	return nil
}

func (s *Server) refresh() {
	s.index.Store(NewIndex(datastore.ViewList[datastore.WorkloadEndpoint](s.view, datastore.EndpointsDir), s.networkOf, s.node))
}

// serve answers cluster names from the index and forwards the rest.
func (s *Server) serve(w mdns.ResponseWriter, req *mdns.Msg) {
	if len(req.Question) != 1 {
		m := new(mdns.Msg)
		m.SetRcode(req, mdns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	asker, _ := netip.ParseAddrPort(w.RemoteAddr().String())
	ix := s.index.Load()
	if !ix.Local(asker.Addr()) {
		m := new(mdns.Msg)
		m.SetRcode(req, mdns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	addrs, _ := ix.Lookup(asker.Addr(), q.Name)
	if len(addrs) == 0 {
		// Not a container the asker shares a network with: the name may
		// be a real domain's.
		w.WriteMsg(s.forward(req))
		return
	}
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, a := range addrs {
		hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: 0}
		switch {
		case a.Is4() && q.Qtype == mdns.TypeA:
			hdr.Rrtype = mdns.TypeA
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && q.Qtype == mdns.TypeAAAA:
			hdr.Rrtype = mdns.TypeAAAA
			m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	w.WriteMsg(m)
}

// forward asks the upstreams in turn; SERVFAIL when none answers.
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	var errs []error
	for _, up := range s.upstreams {
		resp, _, err := s.client.Exchange(req, up)
		if err == nil {
			return resp
		}
		errs = append(errs, err)
	}
	s.log.Debug("DNS forward failed", "name", req.Question[0].Name, "err", errors.Join(errs...))
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	return m
}
