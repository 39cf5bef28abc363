package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/datastore/etcdtest"
	"github.com/tabbynet/tabby/ipamdriver"
)

func TestParseDocumentsNamesTheBadField(t *testing.T) {
	docs, err := parseDocuments([]byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}\n---\n" +
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.0.0/16, blockSize: 28}\n"))
	if err != nil || len(docs) != 2 || docs[1].Metadata.Name != "b" {
		t.Fatalf("two documents: %v %v", docs, err)
	}
	for in, want := range map[string]string{
		"apiVersion: v9\nkind: IPPool\nmetadata: {name: a}\n":                       "apiVersion",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {}\n":                        "metadata.name",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspek: {}\n":       "spek",
		"apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: [\n": "not valid YAML",
		"": "no resources",
	} {
		if _, err := parseDocuments([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: want an error naming %q, got %v", in, want, err)
		}
	}
	var s poolSpec
	d, _ := parseDocuments([]byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16, blockSizes: 26}\n"))
	if err := decodeSpec(d[0], &s); err == nil || !strings.Contains(err.Error(), "blockSizes") {
		t.Fatalf("a misspelt spec field must be named: %v", err)
	}
}

// tabby get never prints a BGP peer's MD5 password, in any format, only
// that one is set; the stored record keeps it for the speaker.
func TestBGPPeerPasswordIsNeverPrinted(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	docs, err := parseDocuments([]byte("apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.0.254, asNumber: 65000, password: s3cr3t-md5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, st, docs, io.Discard); err != nil {
		t.Fatal(err)
	}
	k, _ := kindOf("bgppeers")
	for _, format := range []string{"table", "wide", "yaml", "json"} {
		var b bytes.Buffer
		if err := get(ctx, st, k, "", format, &b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "s3cr3t") {
			t.Fatalf("get -o %s prints the password:\n%s", format, b.String())
		}
		t.Logf("REPORT\tsecrets\ttabby get bgppeers -o %s prints no MD5 password\tprinted: false\tpass", format)
		if (format == "yaml" || format == "json") && !strings.Contains(b.String(), "passwordSet") {
			t.Fatalf("get -o %s does not say a password is set:\n%s", format, b.String())
		}
	}
	var p datastore.BGPPeer
	if _, err := st.Get(ctx, datastore.BGPPeerKey("tor"), &p); err != nil || p.Password != "s3cr3t-md5" {
		t.Fatalf("the stored password: %q (%v)", p.Password, err)
	}
}

// A pool's cidr and blockSize cannot change while it has a block, even an
// empty one (blocks of the new size would overlap it); other fields can.
func TestPoolGeometryIsFixedWhileBlocksExist(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	pool := func(bs int, nat string) []document {
		docs, err := parseDocuments([]byte("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.8.0.0/16, blockSize: " +
			strconv.Itoa(bs) + ", natOutgoing: " + nat + "}\n"))
		if err != nil {
			t.Fatal(err)
		}
		return docs
	}
	if err := apply(ctx, st, pool(26, "true"), io.Discard); err != nil {
		t.Fatal(err)
	}
	a := ipamdriver.NewAllocator(st, "node00")
	ip, err := a.AutoAssign(ctx, netip.Prefix{}, "docker-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseIP(ctx, ip); err != nil { // the block stays, empty, affine to node00
		t.Fatal(err)
	}
	if err := apply(ctx, st, pool(28, "true"), io.Discard); err == nil || !strings.Contains(err.Error(), "cannot change while the pool has blocks") {
		t.Fatalf("blockSize change with an empty block: got %v", err)
	}
	if err := apply(ctx, st, pool(26, "false"), io.Discard); err != nil {
		t.Fatalf("natOutgoing change: %v", err)
	}
	t.Logf("REPORT\tipam\ta pool's blockSize changed while it has an (empty) block\trefused\tpass")
}

// The overlap check is part of the write's transaction: of writers that
// create overlapping pools at once, exactly one succeeds.
func TestOverlappingPoolsAtOnce(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	const n = 12
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			docs, err := parseDocuments([]byte(fmt.Sprintf("apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: p%d}\nspec: {cidr: 10.%d.0.0/%d}\n", i, 30+i%2, 15+i%2)))
			if err != nil {
				errs <- err
				return
			}
			errs <- apply(ctx, st, docs, io.Discard)
		}()
	}
	ok := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			ok++
		} else if !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("unexpected error: %v", err)
		}
	}
	pools, _ := datastore.ListAs[datastore.IPPool](ctx, st, datastore.PoolsDir)
	if ok != 1 || len(pools) != 1 {
		t.Fatalf("%d of %d overlapping creates succeeded, %d pools stored; want exactly one", ok, n, len(pools))
	}
	t.Logf("REPORT\tipam\t%d overlapping pools created at once\t1 stored\tpass", n)
}

// A BGPFilter is checked at apply: a bad rule names its field, in import
// and export lists alike, and nothing is stored.
func TestApplyBGPFilterRefusesWhatItCannotDo(t *testing.T) {
	st := etcdtest.NewStore(t)
	ctx := context.Background()
	for doc, want := range map[string]string{
		"spec: {importV4: [{action: Allow, matchOperator: In, cidr: 10.0.0.0/8}]}":    "spec.importV4[0].action",
		"spec: {exportV6: [{action: Accept, matchOperator: In, cidr: 10.0.0.0/8}]}":   "spec.exportV6[0].cidr",
		"spec: {exportV4: [{action: Accept, matchOperator: Near, cidr: 10.0.0.0/8}]}": "spec.exportV4[0].matchOperator",
	} {
		docs, err := parseDocuments([]byte("apiVersion: tabby/v1\nkind: BGPFilter\nmetadata: {name: f}\n" + doc + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := apply(ctx, st, docs, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error containing %q, got %v", doc, want, err)
		}
	}
	if fs, _ := datastore.ListAs[datastore.BGPFilter](ctx, st, datastore.BGPFiltersDir); len(fs) != 0 {
		t.Fatalf("refused filters were stored: %+v", fs)
	}
}
