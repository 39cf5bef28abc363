package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tabbynet/tabby/bgp"
)

// nodeStatus is what the control socket answers for `tabby node status`.
type nodeStatus struct {
	IPv4 []bgp.PeerStatus `json:"ipv4"`
	IPv6 []bgp.PeerStatus `json:"ipv6"`
}

type statusSource interface {
	Status(ctx context.Context) ([]bgp.PeerStatus, error)
}

// serveControl answers the CLI on a unix socket only root can use.
func serveControl(path string, src statusSource) (*http.Server, error) {
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
		st := nodeStatus{IPv4: []bgp.PeerStatus{}, IPv6: []bgp.PeerStatus{}}
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
		json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// fetchStatus asks the local daemon over its control socket.
func fetchStatus(path string) (*nodeStatus, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
	resp, err := c.Get("http://tabby/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("daemon: %s", strings.TrimSpace(string(b)))
	}
	var st nodeStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

// printStatus prints seed 000's `calicoctl node status` layout.
func printStatus(w io.Writer, st *nodeStatus) {
	fmt.Fprintln(w, "tabby process is running.")
	for _, fam := range []struct {
		name  string
		peers []bgp.PeerStatus
	}{{"IPv4", st.IPv4}, {"IPv6", st.IPv6}} {
		fmt.Fprintf(w, "\n%s BGP status\n", fam.name)
		if len(fam.peers) == 0 {
			fmt.Fprintf(w, "No %s peers found.\n", fam.name)
			continue
		}
		rows := [][]string{}
		for _, p := range fam.peers {
			rows = append(rows, []string{p.Address, p.Type, p.State, p.Since, p.Info})
		}
		printTable(w, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}, rows)
	}
}

// printTable draws a boxed table with centred headings.
func printTable(w io.Writer, head []string, rows [][]string) {
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len(h)
		for _, r := range rows {
			width[i] = max(width[i], len(r[i]))
		}
	}
	line := "+"
	for _, n := range width {
		line += strings.Repeat("-", n+2) + "+"
	}
	fmt.Fprintln(w, line)
	cells := "|"
	for i, h := range head {
		pad := width[i] + 2 - len(h)
		cells += strings.Repeat(" ", pad/2) + h + strings.Repeat(" ", pad-pad/2) + "|"
	}
	fmt.Fprintln(w, cells)
	fmt.Fprintln(w, line)
	for _, r := range rows {
		cells = "|"
		for i, c := range r {
			cells += " " + c + strings.Repeat(" ", width[i]-len(c)) + " |"
		}
		fmt.Fprintln(w, cells)
	}
	fmt.Fprintln(w, line)
}
