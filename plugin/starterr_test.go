package plugin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A daemon that could not start still completes Docker's handshake, so
// the driver resolves, and answers every other call with the reason.
func TestServeStartError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "tabby.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeStartError(ctx, sock, errors.New("run 'sysctl -w x=1' on the host")) }()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	call := func(path string) (int, string) {
		for i := 0; i < 50; i++ {
			resp, err := c.Post("http://tabby"+path, "application/json", strings.NewReader("{}"))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no answer on %s", sock)
		return 0, ""
	}
	if code, body := call("/Plugin.Activate"); code != 200 || !strings.Contains(body, "NetworkDriver") || !strings.Contains(body, "IpamDriver") {
		t.Fatalf("activate: %d %s", code, body)
	}
	if code, body := call("/IpamDriver.RequestPool"); code != 500 || !strings.Contains(body, `"Err":"tabby could not start: run 'sysctl -w x=1' on the host"`) {
		t.Fatalf("request pool: %d %s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
