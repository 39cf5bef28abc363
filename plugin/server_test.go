package plugin

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// fakeNet records calls; the real drivers are covered against real dockerd.
type fakeNet struct {
	network.Driver
	created []string
	fail    error
}

func (f *fakeNet) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: "local"}, nil
}
func (f *fakeNet) CreateNetwork(r *network.CreateNetworkRequest) error {
	f.created = append(f.created, r.NetworkID)
	return f.fail
}

type fakeIPAM struct{ ipam.Ipam }

func (fakeIPAM) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	return &ipam.RequestAddressResponse{Address: "10.0.0.1/32"}, nil
}

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
	var m map[string]any
	json.Unmarshal(rec.Body.Bytes(), &m)
	if ct := rec.Header().Get("Content-Type"); ct != contentType {
		t.Fatalf("%s: content type %q", path, ct)
	}
	return rec.Code, m
}

func TestHandlerServesBothAPIsOnOneSocket(t *testing.T) {
	nd := &fakeNet{}
	h := NewHandler(nd, fakeIPAM{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	code, m := post(t, h, "/Plugin.Activate", "")
	impl, _ := m["Implements"].([]any)
	if code != 200 || len(impl) != 2 || impl[0] != "NetworkDriver" || impl[1] != "IpamDriver" {
		t.Fatalf("activate: %d %v", code, m)
	}
	if code, m = post(t, h, "/NetworkDriver.GetCapabilities", ""); code != 200 || m["Scope"] != "local" {
		t.Fatalf("capabilities: %d %v", code, m)
	}
	if code, m = post(t, h, "/IpamDriver.RequestAddress", `{"PoolID":"x"}`); code != 200 || m["Address"] != "10.0.0.1/32" {
		t.Fatalf("request address: %d %v", code, m)
	}
	// Fields a newer Docker may send are accepted.
	if code, _ = post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n1","FutureField":{"x":1}}`); code != 200 || nd.created[0] != "n1" {
		t.Fatalf("unknown fields: %d %v", code, nd.created)
	}
	nd.fail = errors.New("subnet 1.2.3.0/24 is in no tabby IP pool")
	if code, m = post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"n2"}`); code != 500 || m["Err"] != nd.fail.Error() {
		t.Fatalf("a driver error must reach Docker as {Err}: %d %v", code, m)
	}
	if code, m = post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":`); code != 500 || !strings.Contains(m["Err"].(string), "malformed request") {
		t.Fatalf("malformed JSON: %d %v", code, m)
	}
	if code, m = post(t, h, "/NetworkDriver.CreateNetwork", `{"NetworkID":"`+strings.Repeat("x", 2<<20)+`"}`); code != 500 || !strings.Contains(m["Err"].(string), "too large") {
		t.Fatalf("huge body: %d %v", code, m)
	}
	if len(nd.created) != 2 {
		t.Fatalf("malformed and oversized requests must not reach the driver: %v", nd.created)
	}
	if code, m = post(t, h, "/VolumeDriver.Create", `{}`); code != 404 || m["Err"] == nil {
		t.Fatalf("unknown method: %d %v", code, m)
	}
}
