package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/driver"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/plugin"
)

// fetchStatus asks the local daemon over its control socket.
func fetchStatus(path string) (*plugin.NodeStatus, error) {
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
	var st plugin.NodeStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

// printStatus prints seed 000's `calicoctl node status` layout.
func printStatus(w io.Writer, st *plugin.NodeStatus) {
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
	printWireGuard(w, st.WireGuard)
}

// printWireGuard adds the encryption section, only where WireGuard is on
// (seed 000's layout is unchanged elsewhere).
func printWireGuard(w io.Writer, wg *driver.WireGuardStatus) {
	if wg == nil || (!wg.Enabled && wg.PublicKey == "") {
		return
	}
	fmt.Fprintln(w, "\nWireGuard status")
	switch {
	case wg.Error != "":
		fmt.Fprintf(w, "Not encrypting: %s\n", wg.Error)
		return
	case wg.PublicKey == "":
		fmt.Fprintln(w, "Starting: wireguard.tabby is not up yet.")
		return
	}
	fmt.Fprintf(w, "%s, port %d, public key %s\n", dataplane.WireGuardDevice, wg.Port, wg.PublicKey)
	if len(wg.Peers) == 0 {
		fmt.Fprintln(w, "No WireGuard peers found (no other node publishes a key).")
		return
	}
	rows := [][]string{}
	for _, p := range wg.Peers {
		rows = append(rows, []string{p.Node, p.Endpoint, p.PublicKey, strings.Join(p.AllowedIPs, ","), p.LatestHandshake})
	}
	printTable(w, []string{"PEER NODE", "ENDPOINT", "PUBLIC KEY", "ALLOWED IPS", "LATEST HANDSHAKE"}, rows)
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
