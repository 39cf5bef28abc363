package datastore

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Embedded is a single-member etcd run inside the daemon, for the
// single-host default where no ETCD_ENDPOINTS are given.
type Embedded struct {
	etcd     *embed.Etcd
	Endpoint string
}

// StartEmbedded runs etcd with its data in dir, serving clients on
// clientAddr (host:port, loopback) and peers on the next port.
func StartEmbedded(dir, clientAddr string) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(clientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd address %q: %w; use host:port", clientAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd address %q: port is not a number", clientAddr)
	}
	client := url.URL{Scheme: "http", Host: clientAddr}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port+1))}

	cfg := embed.NewConfig()
	cfg.Name = "tabby"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s on %s: %w", dir, clientAddr, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s did not become ready within 60s", dir)
	}
	return &Embedded{etcd: e, Endpoint: client.String()}, nil
}

// Close stops the embedded server.
func (e *Embedded) Close() { e.etcd.Close() }
