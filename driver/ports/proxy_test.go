package ports

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// The proxy carries a connection to the target; a taken port fails the
// whole Open and leaves the ports it had bound free again; Close frees.
func TestProxyOpenAllOrNothing(t *testing.T) {
	back, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	port := uint16(back.Addr().(*net.TCPAddr).Port)
	p := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	tgt := Target{V4: netip.MustParseAddr("127.0.0.1")}
	got, err := p.Open("a", tgt, []Request{{PortMapping: datastore.PortMapping{Proto: "tcp", HostIP: "127.0.0.1", Port: port}}})
	if err != nil || len(got) != 1 || got[0].HostPort == 0 {
		t.Fatalf("%v %v", got, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(got[0].HostPort)))
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hello" {
		t.Fatalf("through the proxy: %q", b)
	}
	// b asks for a free port and then a's: neither stays held.
	_, err = p.Open("b", tgt, []Request{
		{PortMapping: datastore.PortMapping{Proto: "udp", HostIP: "127.0.0.1", Port: port}},
		{PortMapping: datastore.PortMapping{Proto: "tcp", HostIP: "127.0.0.1", HostPort: got[0].HostPort, Port: port}}})
	if !errors.Is(err, ErrPortInUse) || p.Has("b") {
		t.Fatalf("a taken port: %v (b holds ports: %v)", err, p.Has("b"))
	}
	p.Close("a")
	if ln, err := net.Listen("tcp", addr); err != nil {
		t.Fatalf("after Close the port is still held: %v", err)
	} else {
		ln.Close()
	}
	p.Close("a") // again: fine
}
