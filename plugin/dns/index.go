package dns

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/tabbynet/tabby/datastore"
)

// record is one name of one endpoint as DNS sees it.
type record struct {
	name, network string
	addrs         []netip.Addr
}

// entry is what one endpoint contributes to the index.
type entry struct {
	recs  []record // its name and aliases
	addrs []netip.Addr
	net   string
	local bool
}

// Index answers lookups from the endpoints, kept entry by entry (Set,
// Delete) so that a change costs work in proportion to itself. Pure, so
// the rules (shared networks, NAME.NETWORK) are tested without sockets.
// Safe for concurrent use.
type Index struct {
	networkOf func(datastore.WorkloadEndpoint) string
	node      string
	mu        sync.RWMutex
	byKey     map[string]entry
	byName    map[string]map[string]record // lower-case name -> endpoint key -> record
	nets      map[netip.Addr]map[string]string
	local     map[netip.Addr]int // how many of node's endpoints have the address
}

// NewIndex indexes endpoints; networkOf gives an endpoint's network name,
// node is this host's (whose containers may ask).
func NewIndex(eps []datastore.WorkloadEndpoint, networkOf func(datastore.WorkloadEndpoint) string, node string) *Index {
	ix := &Index{networkOf: networkOf, node: node, byKey: map[string]entry{}, byName: map[string]map[string]record{},
		nets: map[netip.Addr]map[string]string{}, local: map[netip.Addr]int{}}
	for i, e := range eps {
		ix.Set(fmt.Sprintf("%08d", i), e)
	}
	return ix
}

// Set indexes the endpoint stored at key, in place of what key held.
func (ix *Index) Set(key string, e datastore.WorkloadEndpoint) {
	en := entry{addrs: e.Addrs(), net: strings.ToLower(ix.networkOf(e)), local: e.Node == ix.node}
	name := strings.ToLower(e.Workload)
	if name != "" {
		en.recs = append(en.recs, record{name: name, network: en.net, addrs: en.addrs})
	}
	// An alias (a Compose service) names every replica that has it: one
	// record each, on whichever host.
	for _, a := range e.Aliases {
		if a = strings.ToLower(a); a != "" && a != name {
			en.recs = append(en.recs, record{name: a, network: en.net, addrs: en.addrs})
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.remove(key)
	ix.byKey[key] = en
	for _, r := range en.recs {
		if ix.byName[r.name] == nil {
			ix.byName[r.name] = map[string]record{}
		}
		ix.byName[r.name][key] = r
	}
	for _, a := range en.addrs {
		if ix.nets[a] == nil {
			ix.nets[a] = map[string]string{}
		}
		ix.nets[a][key] = en.net
		if en.local {
			ix.local[a]++
		}
	}
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
	for _, r := range en.recs {
		if delete(ix.byName[r.name], key); len(ix.byName[r.name]) == 0 {
			delete(ix.byName, r.name)
		}
	}
	for _, a := range en.addrs {
		if delete(ix.nets[a], key); len(ix.nets[a]) == 0 {
			delete(ix.nets, a)
		}
		if en.local {
			if ix.local[a]--; ix.local[a] <= 0 {
				delete(ix.local, a)
			}
		}
	}
}

// Local reports whether asker is a container of this host.
func (ix *Index) Local(asker netip.Addr) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.local[asker.Unmap()] > 0
}

// Lookup resolves qname (NAME or NAME.NETWORK) for the container at asker.
// cluster reports whether qname names a workload at all; addrs are the
// addresses in networks asker shares with it.
func (ix *Index) Lookup(asker netip.Addr, qname string) (addrs []netip.Addr, cluster bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	q := strings.TrimSuffix(strings.ToLower(qname), ".")
	name, network := q, ""
	if _, ok := ix.byName[name]; !ok {
		if i := strings.IndexByte(q, '.'); i > 0 {
			name, network = q[:i], q[i+1:]
		}
	}
	recs, ok := ix.byName[name]
	if !ok {
		return nil, false
	}
	shared := map[string]bool{}
	for _, n := range ix.nets[asker.Unmap()] {
		shared[n] = true
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys) // answers in a stable order
	matched := false
	for _, k := range keys {
		r := recs[k]
		if network != "" && r.network != network {
			continue
		}
		matched = true
		if shared[r.network] {
			addrs = append(addrs, r.addrs...)
		}
	}
	return addrs, matched
}
