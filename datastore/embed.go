package datastore

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
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

// EmbeddedConfig says where the embedded etcd keeps its data and serves.
type EmbeddedConfig struct {
	Dir string
	// ClientAddr empty: clients and the peer port are served on unix
	// sockets in SockDir (EmbeddedSocket and a peer socket beside it),
	// which is made 0700, so only root reaches them. ClientAddr host:port:
	// TCP there and peers on the next port, without authentication.
	ClientAddr, SockDir string
	// QuotaBytes caps the database file (0: etcd's 2 GiB).
	QuotaBytes int64
}

// Retention is how much history the embedded etcd keeps: it compacts what
// is older by itself, so its database does not grow to the quota. A
// daemon whose watch falls further behind lists again.
const Retention = 10 * time.Minute

// StartEmbedded runs a single-member etcd as cfg says.
func StartEmbedded(ec EmbeddedConfig) (*Embedded, error) {
	dir, clientAddr, sockDir := ec.Dir, ec.ClientAddr, ec.SockDir
	var client, peer url.URL
	if clientAddr == "" {
		if err := os.MkdirAll(sockDir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded etcd socket directory %s: %w", sockDir, err)
		}
		if err := os.Chmod(sockDir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded etcd socket directory %s: %w", sockDir, err)
		}
		sock := EmbeddedSocket(sockDir)
		os.Remove(sock)
		os.Remove(filepath.Join(sockDir, peerSocket))
		// etcd takes a unix URL's host as the socket's path. The peer URL
		// goes into the cluster string, where a host with slashes does not
		// parse back, so its socket is named relative to the working
		// directory, which becomes sockDir (the daemon uses absolute paths
		// only).
		if err := os.Chdir(sockDir); err != nil {
			return nil, fmt.Errorf("embedded etcd socket directory %s: %w", sockDir, err)
		}
		client = url.URL{Scheme: "unix", Host: sock}
		peer = url.URL{Scheme: "unix", Host: peerSocket}
	} else {
		host, portStr, err := net.SplitHostPort(clientAddr)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd address %q: %w; use host:port", clientAddr, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd address %q: port is not a number", clientAddr)
		}
		client = url.URL{Scheme: "http", Host: clientAddr}
		peer = url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port+1))}
	}

	cfg := embed.NewConfig()
	cfg.Name = "tabby"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = Retention.String()
	cfg.QuotaBackendBytes = ec.QuotaBytes
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s on %s: %w", dir, client.Host, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s did not become ready within 60s", dir)
	}
	endpoint := client.String()
	if client.Scheme == "unix" {
		endpoint = EmbeddedEndpoint(sockDir)
	}
	return &Embedded{etcd: e, Endpoint: endpoint}, nil
}

// peerSocket is the embedded etcd's peer socket, in the socket directory.
const peerSocket = "etcd-peer.sock"

// EmbeddedSocket is the embedded etcd's client socket in sockDir.
func EmbeddedSocket(sockDir string) string { return filepath.Join(sockDir, "etcd.sock") }

// EmbeddedEndpoint is the client URL of the embedded etcd's socket.
func EmbeddedEndpoint(sockDir string) string { return "unix://" + EmbeddedSocket(sockDir) }

// Close stops the embedded server.
func (e *Embedded) Close() { e.etcd.Close() }
