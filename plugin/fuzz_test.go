package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
	"github.com/tabbynet/tabby/ipamdriver"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

// fuzzPaths are the plugin methods a fuzzed body is sent to.
var fuzzPaths = []string{
	"/IpamDriver.RequestPool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress",
	"/IpamDriver.ReleasePool", "/NetworkDriver.CreateNetwork", "/Plugin.Activate", "/NoSuch.Method",
}

// inUse counts the addresses assigned in etcd.
func inUse(t testing.TB, st *datastore.Store) int {
	blocks, err := datastore.ListAs[datastore.Block](context.Background(), st, datastore.BlocksDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, u := range ipamdriver.Usage(blocks) {
		n += u.InUse
	}
	return n
}

// FuzzPluginAPI sends arbitrary bodies to the plugin API, with the real
// IPAM driver on a real etcd: no panic, every answer JSON, every rejection
// a non-empty {"Err"}, and a rejected request leaves no address assigned.
// An accepted address is released again, so the state stays bounded.
func FuzzPluginAPI(f *testing.F) {
	st := etcdtest.NewStore(f)
	if err := ipamdriver.EnsureDefaultPools(context.Background(), st, "10.0.0.0/16", "Never", "Never", "fd00:1::/48"); err != nil {
		f.Fatal(err)
	}
	h := NewHandler(&fakeNet{}, ipamdriver.New(st, "fuzz", true), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	f.Add(uint8(0), []byte(`{"AddressSpace":"TabbyLocal","Pool":"10.0.4.0/24"}`))
	f.Add(uint8(0), []byte(`{"V6":true}`))
	f.Add(uint8(1), []byte(`{"PoolID":"tabby-any-v4"}`))
	f.Add(uint8(1), []byte(`{"PoolID":"tabby-v4:10.0.4.0/24","Address":"10.0.4.9"}`))
	f.Add(uint8(1), []byte(`{"PoolID":"tabby-v4:10.0.4.0/24","Address":"10.9.9.9"}`))
	f.Add(uint8(1), []byte(`{"PoolID":"tabby-any-v6","Options":{"RequestAddressType":"com.docker.network.gateway"}}`))
	f.Add(uint8(2), []byte(`{"PoolID":"tabby-any-v4","Address":"10.0.0.1"}`))
	f.Add(uint8(4), []byte(`{"NetworkID":"n","Options":{"com.docker.network.generic":{"x":1}}}`))
	f.Add(uint8(1), []byte(`{"PoolID":`))
	f.Add(uint8(6), []byte(`null`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := fuzzPaths[int(which)%len(fuzzPaths)]
		before := inUse(t, st)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(string(body))))
		var resp map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil && rec.Body.String() != "null\n" {
			t.Fatalf("%s answered non-JSON %q", path, rec.Body.String())
		}
		if rec.Code != 200 {
			if msg, _ := resp["Err"].(string); msg == "" {
				t.Fatalf("%s rejected %q without an error message: %s", path, body, rec.Body.String())
			}
			if after := inUse(t, st); after != before {
				t.Fatalf("%s rejected %q but assigned addresses went %d -> %d", path, body, before, after)
			}
			return
		}
		if addr, _ := resp["Address"].(string); path == "/IpamDriver.RequestAddress" && addr != "" {
			rel, _ := json.Marshal(ipam.ReleaseAddressRequest{Address: addr})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/IpamDriver.ReleaseAddress", strings.NewReader(string(rel))))
			if rec.Code != 200 || inUse(t, st) != before {
				t.Fatalf("releasing %s: %d %s (in use %d, was %d)", addr, rec.Code, rec.Body.String(), inUse(t, st), before)
			}
		}
	})
}

// Docker may send the same request twice at once: of concurrent calls for
// one fixed address exactly one gets it, the rest a clear error, and
// concurrent releases of it all succeed.
func TestConcurrentDuplicateCalls(t *testing.T) {
	st := etcdtest.NewStore(t)
	if err := ipamdriver.EnsureDefaultPools(context.Background(), st, "10.0.0.0/16", "Never", "Never", ""); err != nil {
		t.Fatal(err)
	}
	d := ipamdriver.New(st, "node00", false)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, inUseErrs := 0, 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: ipamdriver.PoolAnyV4, Address: "10.0.0.7"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ipamdriver.ErrInUse):
				inUseErrs++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || inUseErrs != 15 {
		t.Fatalf("16 concurrent requests for 10.0.0.7: %d got it, %d were told it is in use", ok, inUseErrs)
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{Address: "10.0.0.7"}); err != nil {
				t.Errorf("concurrent release: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := inUse(t, st); n != 0 {
		t.Fatalf("%d addresses still assigned after the releases", n)
	}
}
