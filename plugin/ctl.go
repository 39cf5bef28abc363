package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/driver"
)

// NodeStatus is what the control socket answers for `tabby node status`.
type NodeStatus struct {
	IPv4      []bgp.PeerStatus        `json:"ipv4"`
	IPv6      []bgp.PeerStatus        `json:"ipv6"`
	WireGuard *driver.WireGuardStatus `json:"wireguard,omitempty"`
}

type statusSource interface {
	Status(ctx context.Context) ([]bgp.PeerStatus, error)
}

type wgSource interface {
	WireGuard(ctx context.Context) (driver.WireGuardStatus, error)
}

// serveControl answers the CLI on a unix socket only root can use.
func serveControl(path string, src statusSource, wg wgSource) (*http.Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("--run-dir: %w", err)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := NodeStatus{IPv4: []bgp.PeerStatus{}, IPv6: []bgp.PeerStatus{}}
		if src != nil {
			peers, err := src.Status(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			for _, p := range peers {
				if a, err := netip.ParseAddr(p.Address); err == nil && a.Is6() {
					st.IPv6 = append(st.IPv6, p)
				} else {
					st.IPv4 = append(st.IPv4, p)
				}
			}
		}
		if wg != nil {
			ws, err := wg.WireGuard(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			st.WireGuard = &ws
		}
		json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
