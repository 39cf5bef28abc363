// Package hostlocal keeps the facts of this host's endpoints that no other
// host needs: which container sandbox an endpoint joined, the gateway it got
// there and the subnet it routes. They live in memory, indexed by sandbox,
// and in one small file per endpoint (as CNI's host-local IPAM keeps one
// file per address), so a Join writes nothing to etcd, costs the same with
// one local endpoint or thousands, and a restarted daemon finds them again.
package hostlocal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Joined is one endpoint's place in its container.
type Joined struct {
	EndpointID string `json:"endpointID"`
	SandboxKey string `json:"sandboxKey"`
	// Gateway is its 169.254.1.N, distinct among the sandbox's endpoints.
	Gateway string `json:"gateway"`
	// Subnet is its network's --subnet, routed by its interface ("": none).
	Subnet string `json:"subnet,omitempty"`
}

// check refuses what a file must not make the driver act on: an ID that is
// not a file name of ours, an address that is none.
func (j Joined) check() error {
	if !validID(j.EndpointID) {
		return fmt.Errorf("endpoint ID %q", j.EndpointID)
	}
	if j.SandboxKey == "" {
		return errors.New("no sandbox key")
	}
	if g, err := netip.ParseAddr(j.Gateway); err != nil || !g.Is4() {
		return fmt.Errorf("gateway %q", j.Gateway)
	}
	if j.Subnet != "" {
		if _, err := netip.ParsePrefix(j.Subnet); err != nil {
			return fmt.Errorf("subnet %q", j.Subnet)
		}
	}
	return nil
}

// validID accepts Docker's endpoint IDs (hex) and nothing that could leave
// the directory.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Store is the host's joined endpoints. Safe for concurrent use.
type Store struct {
	dir       string
	mu        sync.Mutex
	byID      map[string]Joined
	bySandbox map[string]map[string]bool
}

// Open reads the store kept in dir, making dir (0700) if needed. A file
// that does not hold together is removed and reported in bad, so one
// broken file never stops the daemon.
func Open(dir string) (s *Store, bad []error, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("host-local state in %s: %w", dir, err)
	}
	s = &Store{dir: dir, byID: map[string]Joined{}, bySandbox: map[string]map[string]bool{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("host-local state in %s: %w", dir, err)
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(path)
		var j Joined
		if err == nil {
			err = json.Unmarshal(b, &j)
		}
		if err == nil {
			err = j.check()
		}
		if err == nil && j.EndpointID != e.Name() {
			err = fmt.Errorf("names endpoint %s", j.EndpointID)
		}
		if err != nil {
			bad = append(bad, fmt.Errorf("%s: %w (removed)", path, err))
			os.Remove(path)
			continue
		}
		s.index(j)
	}
	return s, bad, nil
}

func (s *Store) index(j Joined) {
	s.unindex(j.EndpointID)
	s.byID[j.EndpointID] = j
	if s.bySandbox[j.SandboxKey] == nil {
		s.bySandbox[j.SandboxKey] = map[string]bool{}
	}
	s.bySandbox[j.SandboxKey][j.EndpointID] = true
}

func (s *Store) unindex(id string) {
	old, ok := s.byID[id]
	if !ok {
		return
	}
	delete(s.byID, id)
	if m := s.bySandbox[old.SandboxKey]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(s.bySandbox, old.SandboxKey)
		}
	}
}

// Put records j, on disk first (written aside and renamed, so a crash
// leaves the old file or the new one), then in memory.
func (s *Store) Put(j Joined) error {
	if err := j.check(); err != nil {
		return fmt.Errorf("host-local state: %w", err)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, j.EndpointID)
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("host-local state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("host-local state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index(j)
	return nil
}

// Delete forgets an endpoint; one that is not there is fine.
func (s *Store) Delete(id string) error {
	if !validID(id) {
		return nil // never stored
	}
	if err := os.Remove(filepath.Join(s.dir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("host-local state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unindex(id)
	return nil
}

// Get returns an endpoint's facts; ok is false when it is not joined.
func (s *Store) Get(id string) (Joined, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.byID[id]
	return j, ok
}

// InSandbox returns the endpoints joined to a sandbox, by ID.
func (s *Store) InSandbox(key string) []Joined {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Joined, 0, len(s.bySandbox[key]))
	for id := range s.bySandbox[key] {
		out = append(out, s.byID[id])
	}
	sort.Slice(out, func(i, k int) bool { return out[i].EndpointID < out[k].EndpointID })
	return out
}

// All returns every joined endpoint, by ID.
func (s *Store) All() map[string]Joined {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Joined, len(s.byID))
	for id, j := range s.byID {
		out[id] = j
	}
	return out
}
