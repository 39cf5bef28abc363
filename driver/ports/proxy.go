// Package ports publishes container ports on their host (docker run -p).
// It holds each host port, so a second publisher (a container or a host
// process) gets a clear error, and proxies what reaches the port through
// the host's own sockets: connections from the host itself, 127.0.0.1
// included, and from its containers. Traffic from elsewhere never gets
// here: the policy ruleset DNATs it to the container in the kernel.
package ports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// ErrPortInUse means a host port is already taken.
var ErrPortInUse = errors.New("host port already in use")

// Target is where an endpoint's published ports lead.
type Target struct {
	V4, V6 netip.Addr // the container's addresses (V6 invalid: none)
}

// Proxy holds the published ports of this host's endpoints.
type Proxy struct {
	log *slog.Logger
	mu  sync.Mutex
	eps map[string][]io.Closer // endpoint ID → its listeners
}

// New returns an empty proxy.
func New(log *slog.Logger) *Proxy {
	return &Proxy{log: log, eps: map[string][]io.Closer{}}
}

// Request is one port to publish: a mapping whose HostPort is 0 (any free
// port) or the first of a range that ends at End (0: no range).
type Request struct {
	datastore.PortMapping
	End uint16
}

// Open binds every request of endpoint id and proxies it to t: all of them
// or, on an error, none. It returns the mappings as bound. Two requests for
// one container port with no host port given (IPv4 and IPv6, as Docker 28
// and later ask) get the same host port when it is free in both. Opening
// an endpoint again first closes what it held.
func (p *Proxy) Open(id string, t Target, reqs []Request) ([]datastore.PortMapping, error) {
	p.Close(id)
	var held []io.Closer
	var out []datastore.PortMapping
	chosen := map[string]uint16{}
	for _, r := range reqs {
		var try []uint16
		key := fmt.Sprintf("%s/%d", r.Proto, r.Port)
		switch {
		case r.End > r.HostPort && r.HostPort > 0:
			for port := int(r.HostPort); port <= int(r.End); port++ {
				try = append(try, uint16(port))
			}
		case r.HostPort == 0 && chosen[key] != 0:
			try = []uint16{chosen[key], 0}
		default:
			try = []uint16{r.HostPort}
		}
		var c io.Closer
		var port uint16
		var err error
		for _, hp := range try {
			m := r.PortMapping
			m.HostPort = hp
			if c, port, err = p.listen(m, t); err == nil {
				break
			}
		}
		if err != nil {
			for _, c := range held {
				c.Close()
			}
			return nil, err
		}
		if r.HostPort == 0 {
			chosen[key] = port
		}
		held = append(held, c)
		m := r.PortMapping
		m.HostPort = port
		out = append(out, m)
	}
	p.mu.Lock()
	p.eps[id] = held
	p.mu.Unlock()
	return out, nil
}

// Close releases endpoint id's ports; an endpoint without any is fine.
func (p *Proxy) Close(id string) {
	p.mu.Lock()
	held := p.eps[id]
	delete(p.eps, id)
	p.mu.Unlock()
	for _, c := range held {
		c.Close()
	}
}

// Has reports whether endpoint id holds ports.
func (p *Proxy) Has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.eps[id]) > 0
}

// network is the socket family a mapping binds: "" for every address of
// both families, 0.0.0.0 for IPv4's, :: for IPv6's, or one address.
func network(m datastore.PortMapping) (string, string, error) {
	switch m.HostIP {
	case "":
		return m.Proto, "", nil
	case "0.0.0.0":
		return m.Proto + "4", "", nil
	case "::":
		return m.Proto + "6", "", nil
	}
	a, err := netip.ParseAddr(m.HostIP)
	if err != nil {
		return "", "", fmt.Errorf("host IP %q is not an address", m.HostIP)
	}
	if a.Is4() {
		return m.Proto + "4", a.String(), nil
	}
	return m.Proto + "6", a.String(), nil
}

func (p *Proxy) listen(m datastore.PortMapping, t Target) (io.Closer, uint16, error) {
	nw, host, err := network(m)
	if err != nil {
		return nil, 0, err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(m.HostPort)))
	shown := fmt.Sprintf("%s/%s", addr, m.Proto)
	if host == "" {
		shown = fmt.Sprintf("port %d/%s", m.HostPort, m.Proto)
	}
	inUse := func(err error) error {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("publish %s: %w (by a container or a host process); choose another host port", shown, ErrPortInUse)
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("publish %s: %s is not an address of this host", shown, host)
		}
		return fmt.Errorf("publish %s: %w", shown, err)
	}
	switch m.Proto {
	case "tcp":
		ln, err := net.Listen(nw, addr)
		if err != nil {
			return nil, 0, inUse(err)
		}
		go p.serveTCP(ln, t, m.Port)
		return ln, uint16(ln.Addr().(*net.TCPAddr).Port), nil
	case "udp":
		pc, err := net.ListenPacket(nw, addr)
		if err != nil {
			return nil, 0, inUse(err)
		}
		go p.serveUDP(pc, t, m.Port)
		return pc, uint16(pc.LocalAddr().(*net.UDPAddr).Port), nil
	}
	return nil, 0, fmt.Errorf("publish %s: protocol must be tcp or udp", shown)
}

// dest is the container's address for a client: its IPv6 one for an IPv6
// client when it has one, else its IPv4 one.
func (t Target) dest(client net.Addr, port uint16) string {
	a := t.V4
	var ip net.IP
	switch c := client.(type) {
	case *net.TCPAddr:
		ip = c.IP
	case *net.UDPAddr:
		ip = c.IP
	}
	if ip.To4() == nil && t.V6.IsValid() || !a.IsValid() {
		a = t.V6
	}
	return net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
}

func (p *Proxy) serveTCP(ln net.Listener, t Target, port uint16) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", t.dest(c.RemoteAddr(), port), 10*time.Second)
			if err != nil {
				p.log.Debug("published port: container unreachable", "err", err)
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
		}()
	}
}

// udpIdle is how long a UDP client's flow lives without a packet.
const udpIdle = 60 * time.Second

func (p *Proxy) serveUDP(pc net.PacketConn, t Target, port uint16) {
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		mu.Lock()
		up, ok := flows[from.String()]
		if !ok {
			up, err = net.Dial("udp", t.dest(from, port))
			if err != nil {
				mu.Unlock()
				continue
			}
			flows[from.String()] = up
			go func(from net.Addr, up net.Conn) {
				b := make([]byte, 65535)
				for ctx.Err() == nil {
					up.SetReadDeadline(time.Now().Add(udpIdle))
					n, err := up.Read(b)
					if err != nil {
						break
					}
					pc.WriteTo(b[:n], from)
				}
				mu.Lock()
				delete(flows, from.String())
				mu.Unlock()
				up.Close()
			}(from, up)
		}
		mu.Unlock()
		up.Write(buf[:n])
	}
}
