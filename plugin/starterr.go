package plugin

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// ServeStartError answers Docker on the plugin socket until ctx ends: the
// handshake (activation, capabilities) as the daemon would, every other
// request with err as Docker's {"Err": ...}. A managed plugin whose daemon
// cannot start would otherwise just exit, and `docker plugin enable` would
// fail with a socket error that names nothing (Docker only waits for the
// socket); a failed handshake would show as "could not resolve driver".
// This way the first docker network create or docker run names the reason
// and its fix.
func ServeStartError(ctx context.Context, socket string, err error) error {
	ln, lerr := listen(socket)
	if lerr != nil {
		return lerr
	}
	msg := "tabby could not start: " + err.Error()
	handshake := map[string]any{
		"/Plugin.Activate":                    map[string]any{"Implements": []string{"NetworkDriver", "IpamDriver"}},
		"/NetworkDriver.GetCapabilities":      map[string]any{"Scope": "local", "ConnectivityScope": "global"},
		"/IpamDriver.GetCapabilities":         map[string]any{"RequiresMACAddress": false},
		"/IpamDriver.GetDefaultAddressSpaces": map[string]any{"LocalDefaultAddressSpace": "TabbyLocal", "GlobalDefaultAddressSpace": "TabbyGlobal"},
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1+json")
		if v, ok := handshake[r.URL.Path]; ok {
			json.NewEncoder(w).Encode(v)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]string{"Err": msg})
	})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if serr := srv.Serve(ln); serr != nil && serr != http.ErrServerClosed {
		return serr
	}
	return nil
}
