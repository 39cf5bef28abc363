package driver

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/ports"
)

// Docker's port bindings as the plugin socket decodes them.
func TestPortRequests(t *testing.T) {
	var opts map[string]any
	raw := `{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
		{"Proto":17,"IP":"","Port":53,"HostIP":"::","HostPort":0,"HostPortEnd":0}]}`
	if err := json.Unmarshal([]byte(raw), &opts); err != nil {
		t.Fatal(err)
	}
	reqs, err := portRequests(opts)
	if err != nil || len(reqs) != 2 || reqs[0].Proto != "tcp" || reqs[0].HostPort != 8080 || reqs[0].Port != 80 ||
		reqs[1].Proto != "udp" || reqs[1].HostIP != "::" || reqs[1].HostPort != 0 {
		t.Fatalf("%+v %v", reqs, err)
	}
	for bad, want := range map[string]string{
		`{"com.docker.network.portmap":[{"Proto":132,"Port":80,"HostPort":80}]}`:            "tcp and udp only",
		`{"com.docker.network.portmap":[{"Proto":6,"Port":70000,"HostPort":80}]}`:           "Port 70000",
		`{"com.docker.network.portmap":[{"Proto":6,"Port":80,"HostIP":"x","HostPort":80}]}`: `host IP "x"`,
	} {
		json.Unmarshal([]byte(bad), &opts)
		if _, err := portRequests(opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", bad, err, want)
		}
	}
	if reqs, err := portRequests(map[string]any{}); err != nil || reqs != nil {
		t.Fatalf("no bindings: %v %v", reqs, err)
	}
}

// Publishing records the bound ports on the endpoint and revoking clears
// them; a taken port fails with nothing held or recorded; revoking what is
// gone succeeds. (Loopback only: the proxy binds in this namespace.)
func TestPublishRecordsAndUndoes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ep := datastore.WorkloadEndpoint{Node: "node00", EndpointID: "e1", Interface: "cali0e1", IPv4: "192.168.0.5"}
	if err := f.st.Put(ctx, datastore.EndpointKey("node00", "e1"), &ep); err != nil {
		t.Fatal(err)
	}
	binding := func(port int) map[string]any {
		return map[string]any{optPortMap: []any{map[string]any{"Proto": float64(6), "Port": float64(80), "HostIP": "127.0.0.1", "HostPort": float64(port)}}}
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	taken := held.Addr().(*net.TCPAddr).Port
	err = f.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: "e1", Options: binding(taken)})
	var got datastore.WorkloadEndpoint
	read := func() {
		got = datastore.WorkloadEndpoint{}
		f.st.Get(ctx, datastore.EndpointKey("node00", "e1"), &got)
	}
	read()
	if !errors.Is(err, ports.ErrPortInUse) || f.d.ports.Has("e1") || len(got.Ports) != 0 {
		t.Fatalf("a taken port: %v; held %v; recorded %v", err, f.d.ports.Has("e1"), got.Ports)
	}
	if err := f.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: "e1", Options: binding(0)}); err != nil {
		t.Fatal(err)
	}
	read()
	if !f.d.ports.Has("e1") || len(got.Ports) != 1 || got.Ports[0].HostPort == 0 {
		t.Fatalf("published: held %v, recorded %v", f.d.ports.Has("e1"), got.Ports)
	}
	if err := f.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{EndpointID: "e1"}); err != nil {
		t.Fatal(err)
	}
	read()
	if f.d.ports.Has("e1") || len(got.Ports) != 0 {
		t.Fatalf("revoked: held %v, recorded %v", f.d.ports.Has("e1"), got.Ports)
	}
	if err := f.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{EndpointID: "gone"}); err != nil {
		t.Fatalf("revoking an endpoint that is gone: %v", err)
	}
	// Publishing for an endpoint etcd does not have fails, holding nothing.
	if err := f.d.ProgramExternalConnectivity(&network.ProgramExternalConnectivityRequest{EndpointID: "gone", Options: binding(0)}); err == nil || f.d.ports.Has("gone") {
		t.Fatalf("publishing for a missing endpoint: %v, held %v", err, f.d.ports.Has("gone"))
	}
}
