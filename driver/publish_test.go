package driver

import (
	"encoding/json"
	"strings"
	"testing"
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
