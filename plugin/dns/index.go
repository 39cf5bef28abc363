package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"unique"

	"github.com/tabbynet/tabby/datastore"
)

// entry is what one endpoint contributes to the index.
type entry struct {
	names []string // its name and aliases, lower case
	addrs []netip.Addr
	net   unique.Handle[string] // its network, lower case: one copy per network however many endpoints
	local bool
}

// Index answers lookups from the endpoints, kept entry by entry (Set,
// Delete) so that a change costs work in proportion to itself. Pure, so
// the rules (shared networks, NAME.NETWORK) are tested without sockets.
// Safe for concurrent use.
//
// A name is nearly always one endpoint's, so it maps to that endpoint's
// key, and only a name several share to a sorted list of keys: at 20,000
// endpoints a small map for each name and each address was about 28 MB,
// most of a loaded daemon's heap.
type Index struct {
	networkOf func(datastore.WorkloadEndpoint) string
	node      string
	mu        sync.RWMutex
	byKey     map[string]*entry   // by pointer: a map of large values keeps room for twice as many
	byName    map[string]string   // lower-case name -> the key of the one endpoint it names
	shared    map[string][]string // a name of several endpoints (replicas' alias) -> their keys
	// byAddr holds node's endpoints only: only they ask, and the
	// networks of the asker are what it needs.
	byAddr map[netip.Addr][]string // address -> keys of node's endpoints holding it
}

// NewIndex indexes endpoints; networkOf gives an endpoint's network name,
// node is this host's (whose containers may ask).
func NewIndex(eps []datastore.WorkloadEndpoint, networkOf func(datastore.WorkloadEndpoint) string, node string) *Index {
	ix := &Index{networkOf: networkOf, node: node, byKey: map[string]*entry{}, byName: map[string]string{}, shared: map[string][]string{},
		byAddr: map[netip.Addr][]string{}}
	for i, e := range eps {
		ix.Set(fmt.Sprintf("%08d", i), e)
	}
	return ix
}

// Set indexes the endpoint stored at key, in place of what key held.
func (ix *Index) Set(key string, e datastore.WorkloadEndpoint) {
	en := &entry{addrs: e.Addrs(), net: unique.Make(strings.ToLower(ix.networkOf(e))), local: e.Node == ix.node}
	if name := strings.ToLower(e.Workload); name != "" {
		en.names = append(en.names, name)
	}
	// An alias (a Compose service) names every replica that has it, on
	// whichever host.
	for _, a := range e.Aliases {
		if a = strings.ToLower(a); a != "" && !slices.Contains(en.names, a) {
			en.names = append(en.names, a)
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(key)
	ix.byKey[key] = en
	for _, n := range en.names {
		ix.addName(n, key)
	}
	for _, a := range en.addrs {
		if en.local {
			ix.byAddr[a] = insertKey(ix.byAddr[a], key)
		}
	}
}

func (ix *Index) addName(n, key string) {
	if keys, ok := ix.shared[n]; ok {
		ix.shared[n] = insertKey(keys, key)
		return
	}
	if one, ok := ix.byName[n]; ok {
		if one != key {
			delete(ix.byName, n)
			ix.shared[n] = insertKey([]string{one}, key)
		}
		return
	}
	ix.byName[n] = key
}

func (ix *Index) dropName(n, key string) {
	if keys, ok := ix.shared[n]; ok {
		if keys = removeKey(keys, key); len(keys) == 1 {
			delete(ix.shared, n)
			ix.byName[n] = keys[0]
		} else {
			ix.shared[n] = keys
		}
		return
	}
	if ix.byName[n] == key {
		delete(ix.byName, n)
	}
}

// named returns the keys of the endpoints n names, sorted.
func (ix *Index) named(n string) ([]string, bool) {
	if keys, ok := ix.shared[n]; ok {
		return keys, true
	}
	one, ok := ix.byName[n]
	return []string{one}, ok
}

// insertKey adds key to the sorted keys (answers come in a stable order).
func insertKey(keys []string, key string) []string {
	i, found := slices.BinarySearch(keys, key)
	if found {
		return keys
	}
	return slices.Insert(keys, i, key)
}

// removeKey drops key from the sorted keys; nil once none is left.
func removeKey(keys []string, key string) []string {
	i, found := slices.BinarySearch(keys, key)
	if !found {
		return keys
	}
	if len(keys) == 1 {
		return nil
	}
	return slices.Delete(keys, i, i+1)
}

// Delete drops what key contributed; an unknown key is fine.
func (ix *Index) Delete(key string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(key)
}

func (ix *Index) remove(key string) {
	en, ok := ix.byKey[key]
	if !ok {
		return
	}
	delete(ix.byKey, key)
	for _, n := range en.names {
		ix.dropName(n, key)
	}
	for _, a := range en.addrs {
		if !en.local {
			continue
		}
		if ix.byAddr[a] = removeKey(ix.byAddr[a], key); ix.byAddr[a] == nil {
			delete(ix.byAddr, a)
		}
	}
}

// Local reports whether asker is a container of this host.
func (ix *Index) Local(asker netip.Addr) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byAddr[asker.Unmap()]) > 0
}

// Lookup resolves qname (NAME or NAME.NETWORK) for the container at asker,
// one of node's (Local). cluster reports whether qname names a workload at
// all; addrs are the addresses in networks asker shares with it.
func (ix *Index) Lookup(asker netip.Addr, qname string) (addrs []netip.Addr, cluster bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	q := strings.TrimSuffix(strings.ToLower(qname), ".")
	name, network := q, ""
	if _, ok := ix.named(name); !ok {
		if i := strings.IndexByte(q, '.'); i > 0 {
			name, network = q[:i], q[i+1:]
		}
	}
	keys, ok := ix.named(name)
	if !ok {
		return nil, false
	}
	var shared []unique.Handle[string] // the asker's networks: one or a few
	for _, k := range ix.byAddr[asker.Unmap()] {
		shared = append(shared, ix.byKey[k].net)
	}
	matched := false
	for _, k := range keys {
		en := ix.byKey[k]
		if network != "" && en.net.Value() != network {
			continue
		}
		matched = true
		if slices.Contains(shared, en.net) {
			addrs = append(addrs, en.addrs...)
		}
	}
	return addrs, matched
}
