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
	"time"

	mdns "github.com/miekg/dns"
	"github.com/tabbynet/tabby/datastore"
)

// Server answers DNS on one address.
type Server struct {
	node      string
	view      *datastore.View
	upstreams []string
	networkOf func(datastore.WorkloadEndpoint) string
	log       *slog.Logger
	index     *Index
	client    *mdns.Client
}

// New returns a resolver that forwards to upstreams (host:port).
// node is this host's name: only its containers are answered.
func New(view *datastore.View, upstreams []string, networkOf func(datastore.WorkloadEndpoint) string, node string, log *slog.Logger) *Server {
	s := &Server{node: node, view: view, upstreams: upstreams, networkOf: networkOf, log: log,
		client: &mdns.Client{Timeout: 2 * time.Second}}
	s.index = NewIndex(nil, networkOf, node)
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
func (s *Server) Run(ctx context.Context, addrs ...string) error {
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
	// Each endpoint's change updates its own entries: the index costs
	// work in proportion to the change, not to the cluster.
	s.view.Subscribe(datastore.EndpointsDir, s.apply)
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

func (s *Server) apply(ch datastore.Change) {
	if ch.Deleted {
		s.index.Delete(ch.Key)
		return
	}
	e, err := datastore.Decode[datastore.WorkloadEndpoint](ch.Key, ch.Value)
	if err != nil {
		s.index.Delete(ch.Key) // as listings skip it (the view warns)
		return
	}
	s.index.Set(ch.Key, e)
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
	ix := s.index
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
