package plugin

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// maxBody bounds a request body: Docker's requests are a few KiB.
const maxBody = 1 << 20

const contentType = "application/vnd.docker.plugins.v1.1+json"

// manifest tells Docker that one socket implements both APIs.
var manifest = map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}}

// call decodes a request, runs the driver method and encodes its answer.
type call func(body []byte) (any, error)

// with decodes the body into Req for fn; unknown fields (from newer Docker
// versions) are accepted.
func with[Req any, Resp any](fn func(*Req) (Resp, error)) call {
	return func(body []byte) (any, error) {
		req := new(Req)
		if len(body) > 0 {
			if err := json.Unmarshal(body, req); err != nil {
				return nil, errors.New("malformed request: " + err.Error())
			}
		}
		return fn(req)
	}
}

func only[Req any](fn func(*Req) error) call {
	return with(func(r *Req) (struct{}, error) { return struct{}{}, fn(r) })
}

func none[Resp any](fn func() (Resp, error)) call {
	return func([]byte) (any, error) { return fn() }
}

// RequestObserver counts and times plugin calls (the metrics).
type RequestObserver interface {
	ObserveRequest(method string, ok bool, took time.Duration)
}

// NewHandler serves the NetworkDriver and IpamDriver APIs on one mux. It is
// the one place where errors become Docker's {"Err": "..."} answer. obs may
// be nil.
func NewHandler(nd network.Driver, id ipam.Ipam, log *slog.Logger, obs RequestObserver) http.Handler {
	routes := map[string]call{
		"/Plugin.Activate":                           none(func() (any, error) { return manifest, nil }),
		"/NetworkDriver.GetCapabilities":             none(nd.GetCapabilities),
		"/NetworkDriver.CreateNetwork":               only(nd.CreateNetwork),
		"/NetworkDriver.AllocateNetwork":             with(nd.AllocateNetwork),
		"/NetworkDriver.DeleteNetwork":               only(nd.DeleteNetwork),
		"/NetworkDriver.FreeNetwork":                 only(nd.FreeNetwork),
		"/NetworkDriver.CreateEndpoint":              with(nd.CreateEndpoint),
		"/NetworkDriver.DeleteEndpoint":              only(nd.DeleteEndpoint),
		"/NetworkDriver.EndpointOperInfo":            with(nd.EndpointInfo),
		"/NetworkDriver.Join":                        with(nd.Join),
		"/NetworkDriver.Leave":                       only(nd.Leave),
		"/NetworkDriver.DiscoverNew":                 only(nd.DiscoverNew),
		"/NetworkDriver.DiscoverDelete":              only(nd.DiscoverDelete),
		"/NetworkDriver.ProgramExternalConnectivity": only(nd.ProgramExternalConnectivity),
		"/NetworkDriver.RevokeExternalConnectivity":  only(nd.RevokeExternalConnectivity),
		"/IpamDriver.GetCapabilities":                none(id.GetCapabilities),
		"/IpamDriver.GetDefaultAddressSpaces":        none(id.GetDefaultAddressSpaces),
		"/IpamDriver.RequestPool":                    with(id.RequestPool),
		"/IpamDriver.ReleasePool":                    only(id.ReleasePool),
		"/IpamDriver.RequestAddress":                 with(id.RequestAddress),
		"/IpamDriver.ReleaseAddress":                 only(id.ReleaseAddress),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		fn, ok := routes[r.URL.Path]
		w.Header().Set("Content-Type", contentType)
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"Err": "tabby does not implement " + r.URL.Path})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		var resp any
		if err != nil {
			err = errors.New("request body too large or unreadable: " + err.Error())
		} else {
			resp, err = fn(body)
		}
		if obs != nil {
			obs.ObserveRequest(r.URL.Path[1:], err == nil, time.Since(start))
		}
		if err != nil {
			log.Warn("plugin call failed", "method", r.URL.Path[1:], "err", err, "took", time.Since(start))
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"Err": err.Error()})
			return
		}
		log.Debug("plugin call", "method", r.URL.Path[1:], "took", time.Since(start))
		json.NewEncoder(w).Encode(resp)
	})
}
