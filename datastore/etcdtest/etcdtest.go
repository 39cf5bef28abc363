// Package etcdtest starts a real etcd server on loopback for tests, from the
// etcd binary Debian's etcd-server package installs.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// Server is one etcd process.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
	dir      string
}

// Start runs etcd in a temporary directory. It is stopped by Stop.
func Start() (*Server, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd binary not found (apt-get install etcd-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "tabby-etcd-")
	if err != nil {
		return nil, err
	}
	// Unix sockets reach every network namespace of the machine, so daemons
	// in lab hosts share this etcd. etcd insists on host:port and creates the
	// socket files "etcd:1" and "peer:2" in its working directory.
	cmd := exec.Command(bin, "--name", "test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "unix://etcd:1", "--advertise-client-urls", "unix://etcd:1",
		"--listen-peer-urls", "unix://peer:2", "--initial-advertise-peer-urls", "unix://peer:2",
		"--initial-cluster", "test=unix://peer:2", "--log-level", "error")
	cmd.Dir = dir
	client := "unix://" + filepath.Join(dir, "etcd:1")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{Endpoint: client, cmd: cmd, dir: dir}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{client}, Timeout: time.Second})
		cancel()
		if err == nil {
			st.Close()
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.Stop()
	return nil, fmt.Errorf("etcd on %s did not come up", client)
}

// Metrics returns etcd's Prometheus metrics (its /metrics, served on the
// client socket).
func (s *Server) Metrics() (string, error) {
	sock := strings.TrimPrefix(s.Endpoint, "unix://")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Get("http://etcd/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Stop kills etcd and removes its data.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}

// Freeze stops etcd in place (SIGSTOP): clients see an outage, connections
// time out rather than being refused, as with a hung or partitioned server.
func (s *Server) Freeze() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a frozen etcd.
func (s *Server) Thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Store opens a store on a fresh key space: every test starts from an
// empty /tabby/v1/ and leaves nothing behind.
func (s *Server) Store(t testing.TB) *datastore.Store {
	t.Helper()
	st, err := datastore.Open(context.Background(), datastore.Config{Endpoints: []string{s.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePrefix(context.Background(), datastore.Prefix); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.DeletePrefix(context.Background(), datastore.Prefix)
		st.Close()
	})
	return st
}

// shared is the etcd of the running test binary, started by Main.
var (
	shared     *Server
	sharedSkip string
)

// Main runs a package's tests with one shared etcd. Without an etcd binary
// the tests that need it skip with the reason, except under CI, which must
// run them.
func Main(m *testing.M) {
	srv, err := Start()
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "CI must run the etcd tests:", err)
			os.Exit(1)
		}
		sharedSkip = err.Error()
	}
	shared = srv
	code := m.Run()
	if srv != nil {
		srv.Stop()
	}
	os.Exit(code)
}

// NewStore returns a store on the shared etcd with an empty key space, or
// skips the test when there is no etcd.
func NewStore(t testing.TB) *datastore.Store {
	t.Helper()
	if shared == nil {
		t.Skip("needs a real etcd: " + sharedSkip)
	}
	return shared.Store(t)
}

// NewView returns a running view of st, stopped when the test ends.
func NewView(t testing.TB, st *datastore.Store) *datastore.View {
	t.Helper()
	v := st.NewView()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return v
}

// CaughtUp waits until v holds every write made to st so far.
func CaughtUp(t testing.TB, st *datastore.Store, v *datastore.View) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := st.Revision(ctx)
	if err == nil {
		err = v.Wait(ctx, rev)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Cluster is several etcd members, each in a network namespace of its own
// (unix sockets reach across namespaces; they share a socket directory).
type Cluster struct {
	Members   []*Server
	Endpoints []string
	dir       string
}

// StartCluster runs one member in each of netns (names under /run/netns)
// and waits until the cluster answers.
func StartCluster(netns []string) (*Cluster, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("etcd binary not found (apt-get install etcd-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "tabby-etcd-cluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	// Peer URLs go into the cluster string, where a unix host with slashes
	// does not parse: the sockets are named relative to the members' shared
	// working directory.
	var initial []string
	for i := range netns {
		initial = append(initial, fmt.Sprintf("m%d=unix://m%d-peer:2", i, i))
	}
	for i, ns := range netns {
		name := fmt.Sprintf("m%d", i)
		client := fmt.Sprintf("unix://%s-client:1", name)
		cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, bin, "--name", name,
			"--data-dir", filepath.Join(dir, name+".data"),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", fmt.Sprintf("unix://%s-peer:2", name), "--initial-advertise-peer-urls", fmt.Sprintf("unix://%s-peer:2", name),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--log-level", "error")
		cmd.Dir = dir
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			c.Stop()
			return nil, err
		}
		ep := "unix://" + filepath.Join(dir, name+"-client:1")
		c.Members = append(c.Members, &Server{Endpoint: ep, cmd: cmd})
		c.Endpoints = append(c.Endpoints, ep)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := datastore.Open(ctx, datastore.Config{Endpoints: c.Endpoints, Timeout: 2 * time.Second})
		if err == nil {
			err = st.Put(ctx, datastore.Prefix+"ready", "1")
			st.Close()
		}
		cancel()
		if err == nil {
			return c, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.Stop()
	return nil, fmt.Errorf("etcd cluster in %s did not come up", dir)
}

// Leader returns the index of the member that leads now.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	st, err := datastore.Open(ctx, datastore.Config{Endpoints: c.Endpoints, Timeout: 2 * time.Second})
	if err != nil {
		return -1, err
	}
	defer st.Close()
	stats, err := st.DBStats(ctx)
	if err != nil {
		return -1, err
	}
	for _, s := range stats {
		if s.Leader {
			for i, ep := range c.Endpoints {
				if ep == s.Endpoint {
					return i, nil
				}
			}
		}
	}
	return -1, errors.New("no member says it leads")
}

// Kill ends member i at once (SIGKILL), as a crashed machine.
func (c *Cluster) Kill(i int) error {
	m := c.Members[i]
	if err := m.cmd.Process.Kill(); err != nil {
		return err
	}
	m.cmd.Wait()
	return nil
}

// Stop ends every member still running and removes their data.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		if m.cmd.ProcessState == nil && m.cmd.Process != nil {
			m.cmd.Process.Kill()
			m.cmd.Wait()
		}
	}
	os.RemoveAll(c.dir)
}
