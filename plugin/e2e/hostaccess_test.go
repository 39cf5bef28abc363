package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// connects reports whether ctr opens a TCP connection to addr:port.
func connects(h *lab.Host, ctr, addr, port string) bool {
	_, err := h.Docker("exec", ctr, "nc", "-w", "2", addr, port, "-e", "true")
	return err == nil
}

// Containers reach their host as on Docker's bridge, but never tabby's own
// ports (BGP, metrics); with --endpoint-to-host drop only the resolver
// stays open.
func TestContainersAndTheirHost(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 1, DNS: true, Env: []string{"TABBY_METRICS_ADDR=10.99.0.10:9091"}})
	fakeUpstream(t, l)
	h := l.Hosts[0]
	createEverywhere(t, l, h, "net1")
	must(t, h, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	// A service of the host's own, which Docker's bridge would let
	// containers reach.
	serveIn(t, "/run/netns/"+h.NS, h.Addr+":8080", func(c net.Conn) { c.Close() })
	// The host itself reaches tabby's ports: the check below is not
	// vacuous.
	for _, port := range []string{"179", "9091"} {
		if err := inNetns("/run/netns/"+h.NS, func() error {
			c, err := net.DialTimeout("tcp", h.Addr+":"+port, 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("the host cannot reach tabby's port %s itself: %v", port, err)
		}
	}
	resolves := func() bool {
		out, _ := h.Docker("exec", "containerA", "nslookup", "outside.example")
		return strings.Contains(out, "203.0.113.7")
	}
	eventually(t, 10*time.Second, "containerA reaches the host's service on 8080", func() (string, bool) {
		return "", connects(h, "containerA", h.Addr, "8080")
	})
	for _, port := range []string{"179", "9091"} {
		c := connects(h, "containerA", h.Addr, port)
		report(t, "container to host", "a container connects to tabby's port "+port+" on its host", fmt.Sprintf("connected: %v", c), !c)
	}
	r := resolves()
	report(t, "container to host", "the resolver stays open to containers", fmt.Sprintf("resolved: %v", r), r)

	h.StopTabby()
	h.StartTabby("TABBY_METRICS_ADDR=10.99.0.10:9091", "TABBY_ENDPOINT_TO_HOST=drop")
	eventually(t, 15*time.Second, "with drop, containerA no longer reaches the host's 8080", func() (string, bool) {
		return "", !connects(h, "containerA", h.Addr, "8080")
	})
	c := connects(h, "containerA", h.Addr, "179")
	report(t, "container to host", "--endpoint-to-host drop: BGP and a host service closed", fmt.Sprintf("connected to 179: %v", c), !c)
	r = resolves()
	report(t, "container to host", "--endpoint-to-host drop: the resolver stays open", fmt.Sprintf("resolved: %v", r), r)
}
