package ipamdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func newStore(t testing.TB) *datastore.Store { return etcdtest.NewStore(t) }

func addPool(t *testing.T, st *datastore.Store, name, cidr string, bs int) {
	t.Helper()
	p := datastore.IPPool{Name: name, CIDR: cidr, BlockSize: bs}
	if err := ValidatePool(&p); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(context.Background(), datastore.PoolKey(name), &p); err != nil {
		t.Fatal(err)
	}
}

func blockOf(t *testing.T, st *datastore.Store, cidr string) datastore.Block {
	t.Helper()
	var b datastore.Block
	if _, err := st.Get(context.Background(), datastore.BlockKey(cidr), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// From "thin view": each allocator reads a view that keeps the values of
// its own node's blocks, affinities and handles only, as a daemon's view
// does; the borrow reads the other node's block from etcd.
func TestAllocatorAffinityThenNewBlockThenBorrow(t *testing.T) {
	for _, from := range []string{"etcd", "thin view"} {
		t.Run(from, func(t *testing.T) { testAffinityThenNewBlockThenBorrow(t, from) })
	}
}

func testAffinityThenNewBlockThenBorrow(t *testing.T, from string) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "small", "10.1.0.0/29", 30) // two blocks of four
	a, b := NewAllocator(st, "nodeA"), NewAllocator(st, "nodeB")
	if from == "thin view" {
		for node, al := range map[string]*Allocator{"nodeA": a, "nodeB": b} {
			v := etcdtest.NewView(t, st)
			v.Thin(datastore.AffinitiesDir, datastore.AffinitiesOf(node))
			v.ThinUnless(datastore.BlocksDir, datastore.BlockOf(node))
			v.ThinUnless(datastore.HandlesDir, datastore.HandleOf(node))
			al.UseView(v)
		}
	}

	ipA, err := a.AutoAssign(ctx, netip.Prefix{}, "hA")
	if err != nil {
		t.Fatal(err)
	}
	blockA := blockFor(ipA, 30).String()
	if got := blockOf(t, st, blockA).Affinity; got != "nodeA" {
		t.Fatalf("block %s has affinity %q, want nodeA", blockA, got)
	}
	keys, _ := st.ListKeys(ctx, datastore.AffinitiesOf("nodeA"))
	if len(keys) != 1 {
		t.Fatalf("nodeA has %d affinity keys, want 1", len(keys))
	}
	var fromB []netip.Addr
	for i := 0; i < 4; i++ {
		ip, err := b.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("hB%d", i))
		if err != nil {
			t.Fatal(err)
		}
		fromB = append(fromB, ip)
	}
	blockB := blockFor(fromB[0], 30).String()
	if blockB == blockA {
		t.Fatalf("nodeB allocated from nodeA's block %s while a free block existed", blockA)
	}
	for _, ip := range fromB {
		if blockFor(ip, 30).String() != blockB {
			t.Fatalf("nodeB's first four addresses %v are not all in its own block %s", fromB, blockB)
		}
	}
	// The pool has no free block left: nodeB must borrow from nodeA's block.
	borrowed, err := b.AutoAssign(ctx, netip.Prefix{}, "hB4")
	if err != nil {
		t.Fatal(err)
	}
	if blockFor(borrowed, 30).String() != blockA {
		t.Fatalf("borrowed %s, want an address in nodeA's block %s", borrowed, blockA)
	}
	if got := blockOf(t, st, blockA).Affinity; got != "nodeA" {
		t.Fatalf("borrowing moved the block's affinity to %q", got)
	}
	if err := b.ReleaseHandle(ctx, "hB4"); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(blockOf(t, st, blockA).Allocations, "hB4") {
		t.Fatalf("releasing the borrowed %s left it assigned in %s", borrowed, blockA)
	}
	if again, err := b.AutoAssign(ctx, netip.Prefix{}, "hB4"); err != nil || again != borrowed {
		t.Fatalf("borrowing again: %v, %v; want %s", again, err, borrowed)
	}
	for i := 0; i < 2; i++ {
		if _, err := a.AutoAssign(ctx, netip.Prefix{}, "more"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = a.AutoAssign(ctx, netip.Prefix{}, "full")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "small") {
		t.Fatalf("a full pool must give ErrExhausted naming the pool, got %v", err)
	}
}

func TestAllocatorAssignReleaseIdempotent(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.2.0.0/24", 26)
	a := NewAllocator(st, "n1")
	ip := netip.MustParseAddr("10.2.0.77")
	if err := a.Assign(ctx, ip, "h1"); err != nil {
		t.Fatal(err)
	}
	if got := blockOf(t, st, "10.2.0.64/26").Affinity; got != "n1" {
		t.Fatalf("assigning into an unclaimed block should claim it for n1, affinity %q", got)
	}
	if err := a.Assign(ctx, ip, "h2"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "10.2.0.77") {
		t.Fatalf("second assign of 10.2.0.77: %v, want ErrInUse naming the address", err)
	}
	if err := a.Assign(ctx, netip.MustParseAddr("10.3.0.1"), "h3"); err == nil || !strings.Contains(err.Error(), "outside every tabby IP pool") {
		t.Fatalf("assign outside pools: %v", err)
	}
	// The auto allocator must skip the taken address.
	for i := 0; i < 63; i++ {
		got, err := a.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("auto%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if got == ip {
			t.Fatalf("AutoAssign handed out %s, which --ip already holds", ip)
		}
	}
	if err := a.ReleaseIP(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseIP(ctx, ip); err != nil {
		t.Fatalf("releasing a free address must succeed: %v", err)
	}
	if _, err := st.Get(ctx, datastore.HandleKey("h1"), &datastore.Handle{}); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("handle h1 should be gone after its only address was released: %v", err)
	}
	if err := a.ReleaseHandle(ctx, "auto0"); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseHandle(ctx, "auto0"); err != nil {
		t.Fatalf("releasing a released handle must succeed: %v", err)
	}
	if err := a.Assign(ctx, ip, "h4"); err != nil {
		t.Fatalf("a released address must be assignable again: %v", err)
	}
}

func TestPoolForSubnet(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "default", "192.168.0.0/16", 26)
	addPool(t, st, "ten", "10.10.0.0/16", 26)
	a := NewAllocator(st, "n")
	for subnet, want := range map[string]string{"192.168.0.0/16": "default", "10.10.4.0/24": "ten"} {
		p, err := a.PoolFor(ctx, netip.MustParsePrefix(subnet))
		if err != nil || p.Name != want {
			t.Fatalf("PoolFor(%s) = %s, %v; want %s", subnet, p.Name, err, want)
		}
	}
	if _, err := a.PoolFor(ctx, netip.MustParsePrefix("192.0.0.0/8")); err == nil || !strings.Contains(err.Error(), "overlaps IP pool default") {
		t.Fatalf("overlapping subnet: %v", err)
	}
	if _, err := a.PoolFor(ctx, netip.MustParsePrefix("172.30.0.0/16")); err == nil || !strings.Contains(err.Error(), "in no tabby IP pool") {
		t.Fatalf("unknown subnet: %v", err)
	}
	ip, err := a.AutoAssign(ctx, netip.MustParsePrefix("10.10.4.0/24"), "h")
	if err != nil || !netip.MustParsePrefix("10.10.4.0/24").Contains(ip) {
		t.Fatalf("AutoAssign within 10.10.4.0/24 = %s, %v", ip, err)
	}
}

// Two hosts hammer one etcd concurrently; no address may be handed out twice
// and the stored blocks must hold exactly what was handed out.
func TestAllocatorConcurrentHostsNoDuplicates(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.9.0.0/24", 28) // 16 blocks of 16: forces claims and borrowing
	allocs := []*Allocator{NewAllocator(st, "hostA"), NewAllocator(st, "hostB")}
	// A second Allocator for hostA stands for a restarted daemon racing the old one.
	allocs = append(allocs, NewAllocator(st, "hostA"))
	const perWorker = 20
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for ai, a := range allocs {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(a *Allocator, id string) {
				defer wg.Done()
				for i := 0; i < perWorker; i++ {
					h := fmt.Sprintf("%s-%d", id, i)
					ip, err := a.AutoAssign(ctx, netip.Prefix{}, h)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if prev, dup := seen[ip]; dup {
						errs <- fmt.Errorf("%s handed to both %s and %s", ip, prev, h)
					}
					seen[ip] = h
					mu.Unlock()
				}
			}(a, fmt.Sprintf("a%dw%d", ai, w))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != 3*4*perWorker {
		t.Fatalf("%d addresses handed out, want %d", len(seen), 3*4*perWorker)
	}
	blocks, err := datastore.ListAs[datastore.Block](ctx, st, datastore.BlocksDir)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, sb := range blocks {
		b, err := wrapBlock(&sb)
		if err != nil {
			t.Fatal(err)
		}
		for ip, h := range b.inUse() {
			stored++
			if seen[ip] != h {
				t.Fatalf("block %s says %s belongs to %q, the caller got it as %q", b.CIDR, ip, h, seen[ip])
			}
		}
	}
	if stored != len(seen) {
		t.Fatalf("blocks hold %d addresses, %d were handed out", stored, len(seen))
	}
}

// The allocator caches pools and blocks between batches; a pool added later
// must be usable at once, and a deleted pool never allocated from again.
func TestAllocatorCacheSeesPoolChanges(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "first", "10.30.0.0/16", 26)
	a := NewAllocator(st, "n1")
	if _, err := a.AutoAssign(ctx, netip.Prefix{}, "warm"); err != nil {
		t.Fatal(err)
	}
	addPool(t, st, "second", "10.40.0.0/16", 26)
	within := netip.MustParsePrefix("10.40.1.0/24")
	ip, err := a.AutoAssign(ctx, within, "new-pool")
	if err != nil || !within.Contains(ip) {
		t.Fatalf("allocation in a pool added after the cache warmed: %s %v", ip, err)
	}
	if err := st.Delete(ctx, datastore.PoolKey("first")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ip, err := a.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("after-delete-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if netip.MustParsePrefix("10.30.0.0/16").Contains(ip) {
			t.Fatalf("allocated %s from deleted pool first", ip)
		}
	}
}

// A gone node's addresses, tunnel address and blocks are released; a block
// another host borrowed from keeps its borrowed address, without owner.
func TestReleaseNode(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.0.0.0/28", 30) // four blocks of four
	gone, other := NewAllocator(st, "gone"), NewAllocator(st, "other")
	var mine []netip.Addr
	for i := 0; i < 5; i++ { // one block full, one address in a second
		ip, err := gone.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("h%d", i))
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, ip)
	}
	if _, err := gone.AutoAssign(ctx, netip.Prefix{}, "vxlan-tunnel-addr-gone"); err != nil {
		t.Fatal(err)
	}
	// other fills the two remaining blocks, then borrows from gone's second block.
	var borrowed netip.Addr
	for i := 0; i < 9; i++ {
		ip, err := other.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("o%d", i))
		if err != nil {
			t.Fatal(err)
		}
		borrowed = ip
	}
	n, err := NewAllocator(st, "cli").ReleaseNode(ctx, "gone", mine)
	if err != nil || n != 2 {
		t.Fatalf("ReleaseNode = %d blocks, %v; want 2", n, err)
	}
	if keys, _ := st.ListKeys(ctx, datastore.AffinitiesOf("gone")); len(keys) != 0 {
		t.Fatalf("affinities left: %v", keys)
	}
	blocks, _ := datastore.ListAs[datastore.Block](ctx, st, datastore.BlocksDir)
	for _, b := range blocks {
		if b.Affinity == "gone" {
			t.Fatalf("block %s still belongs to the gone node", b.CIDR)
		}
	}
	if block, h := HandleOf(blocks, borrowed); block == "" || h != "o8" {
		t.Fatalf("the borrowed address %s must stay assigned to o8: %s %q", borrowed, block, h)
	}
	if f := Check(State{Blocks: blocks}); len(f) != 9 { // only other's nine (no endpoints given)
		t.Fatalf("after release, only other's addresses remain: %v", f)
	}
}

// An address of a pool disabled after it was assigned still goes back on
// release (before, the release found no pool and freed nothing).
func TestReleaseInDisabledPool(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.7.0.0/24", 26)
	a := NewAllocator(st, "nodeA")
	ip, err := a.AutoAssign(ctx, netip.Prefix{}, "docker-x")
	if err != nil {
		t.Fatal(err)
	}
	if err := datastore.Update(ctx, st, datastore.PoolKey("p"), func(p *datastore.IPPool, _ bool) error {
		p.Disabled = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AutoAssign(ctx, netip.Prefix{}, "docker-y"); err == nil {
		t.Fatal("a disabled pool handed out an address")
	}
	if err := a.ReleaseIP(ctx, ip); err != nil {
		t.Fatal(err)
	}
	b := blockOf(t, st, blockFor(ip, 26).String())
	for i, h := range b.Allocations {
		if h != "" {
			t.Fatalf("ordinal %d still held by %q after the release", i, h)
		}
	}
	if _, err := st.Get(ctx, datastore.HandleKey("docker-x"), &datastore.Handle{}); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("the handle should be gone: %v", err)
	}
	t.Logf("REPORT\tipam\ta release in a pool disabled since the assignment\taddress freed\tpass")
}

// Docker's ReleaseAddress names an address only: it frees an address that
// RequestAddress assigned, never one another kind of owner holds (a node's
// tunnel address).
func TestReleaseAddressFreesDockersAddressesOnly(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.9.0.0/24", 26)
	d := New(st, "node00", false)
	tunnel, err := d.Allocator().AutoAssign(ctx, netip.Prefix{}, "vxlan-tunnel-addr-node00")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.RequestAddress(&ipam.RequestAddressRequest{PoolID: PoolAnyV4})
	if err != nil {
		t.Fatal(err)
	}
	mine := netip.MustParsePrefix(resp.Address).Addr()
	for _, a := range []netip.Addr{tunnel, mine} {
		if err := d.ReleaseAddress(&ipam.ReleaseAddressRequest{PoolID: PoolAnyV4, Address: a.String()}); err != nil {
			t.Fatal(err)
		}
	}
	inUse := blockOf(t, st, blockFor(tunnel, 26).String()).Allocations
	held := map[string]bool{}
	for _, h := range inUse {
		held[h] = held[h] || h != ""
	}
	if !held["vxlan-tunnel-addr-node00"] {
		t.Fatalf("Docker's release freed the node's tunnel address %s: %v", tunnel, inUse)
	}
	for h := range held {
		if strings.HasPrefix(h, "docker-") {
			t.Fatalf("Docker's own address %s is still held by %s", mine, h)
		}
	}
	t.Logf("REPORT\tipam\tDocker's ReleaseAddress of a node's tunnel address\ttunnel address kept\tpass")
}

// A release of an address that an endpoint uses is late (Docker deletes the
// endpoint first): the container that took the address since keeps it.
func TestLateReleaseKeepsTheNewHoldersAddress(t *testing.T) {
	for _, from := range []string{"etcd", "view", "thin view"} {
		t.Run(from, func(t *testing.T) { testLateRelease(t, from) })
	}
}

// from "thin view": the view keeps only the keys of the handle's node's
// endpoints, as a daemon's view does of other hosts', and the check reads
// them from etcd.
func testLateRelease(t *testing.T, from string) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.9.0.0/24", 26)
	d := New(st, "node00", false)
	if from != "etcd" {
		v := etcdtest.NewView(t, st)
		if from == "thin view" {
			v.Thin(datastore.EndpointsDir, datastore.EndpointsOf("node01"))
		}
		d.Allocator().UseView(v)
	}
	req := &ipam.RequestAddressRequest{PoolID: PoolAnyV4, Address: "10.9.0.5"}
	resp, err := d.RequestAddress(req)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParsePrefix(resp.Address).Addr()
	rel := &ipam.ReleaseAddressRequest{PoolID: PoolAnyV4, Address: addr.String()}
	if err := d.ReleaseAddress(rel); err != nil { // the first container's
		t.Fatal(err)
	}
	if _, err := d.RequestAddress(req); err != nil { // a second container takes it
		t.Fatal(err)
	}
	ep := datastore.WorkloadEndpoint{Node: "node00", EndpointID: "e2", Interface: "cali0e2", IPv4: addr.String()}
	if err := st.Put(ctx, datastore.EndpointKey("node00", "e2"), &ep); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleaseAddress(rel); err != nil { // the first container's, again
		t.Fatal(err)
	}
	if h := blockOf(t, st, "10.9.0.0/26").Allocations[5]; h == "" {
		t.Fatal("a late release freed the address the second container's endpoint uses")
	}
	// Its own release, after its endpoint went, frees it.
	if err := st.Delete(ctx, datastore.EndpointKey("node00", "e2")); err != nil {
		t.Fatal(err)
	}
	if err := d.ReleaseAddress(rel); err != nil {
		t.Fatal(err)
	}
	if h := blockOf(t, st, "10.9.0.0/26").Allocations[5]; h != "" {
		t.Fatalf("the address is still held by %s after its endpoint went", h)
	}
	t.Logf("REPORT\tipam\ta late ReleaseAddress of an address another container took since\tthe new holder keeps it\tpass")
}

// viewed returns an allocator that reads from a view of st, as the
// daemon's does.
func viewed(t *testing.T, st *datastore.Store, node string) *Allocator {
	a := NewAllocator(st, node)
	a.UseView(etcdtest.NewView(t, st))
	return a
}

// The daemon's allocator reads pools and affinities from its view, which
// may lag: hosts racing for blocks still never share an address, and a
// pool added a moment ago is used at once.
func TestAllocatorOnAViewThatLags(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	addPool(t, st, "p", "10.9.0.0/24", 28)
	allocs := []*Allocator{viewed(t, st, "hostA"), viewed(t, st, "hostB"), viewed(t, st, "hostA")}
	seen := map[netip.Addr]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for ai, a := range allocs {
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					ip, err := a.AutoAssign(ctx, netip.Prefix{}, fmt.Sprintf("a%dw%d-%d", ai, w, i))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if seen[ip] {
						errs <- fmt.Errorf("%s handed out twice", ip)
					}
					seen[ip] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != 180 {
		t.Fatalf("%d addresses, want 180", len(seen))
	}
	addPool(t, st, "second", "10.40.0.0/16", 26)
	a := allocs[1]
	if p, err := a.PoolFor(ctx, netip.MustParsePrefix("10.40.3.0/24")); err != nil || p.Name != "second" {
		t.Fatalf("a pool added a moment ago: %+v %v", p, err)
	}
	within := netip.MustParsePrefix("10.40.1.0/24")
	addPool(t, st, "third", "10.50.0.0/16", 26)
	if ip, err := a.AutoAssign(ctx, netip.MustParsePrefix("10.50.1.0/24"), "new-pool"); err != nil || !netip.MustParsePrefix("10.50.1.0/24").Contains(ip) {
		t.Fatalf("allocation in a pool added a moment ago: %s %v", ip, err)
	}
	if ip, err := a.AutoAssign(ctx, within, "second-pool"); err != nil || !within.Contains(ip) {
		t.Fatalf("allocation in the second pool: %s %v", ip, err)
	}
}
