package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// policyHost is one host's policy state over a planted cluster: the index,
// its 50 local endpoints and an enforcer in a namespace of its own with the
// first rule set installed.
type policyHost struct {
	all, mine []Endpoint
	profiles  map[string]datastore.Profile
	members   *Members
	enf       *Enforcer
	first     string
}

func plantPolicy(b *testing.B, cluster, local int) *policyHost {
	h := &policyHost{profiles: map[string]datastore.Profile{}, members: NewMembers()}
	for i := 0; i < cluster; i++ {
		net := fmt.Sprintf("net%d", i%10)
		h.profiles[net] = profileOf(net)
		e := ep("", netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)}).String(), net)
		if i < local {
			e.Iface = fmt.Sprintf("cali%011d", i)
			h.mine = append(h.mine, e)
		}
		h.all = append(h.all, e)
	}
	_, h.enf = enforcerIn(b, "tpolb-")
	h.members.SetProfiles(h.profiles)
	for i, e := range h.all {
		h.members.Put(fmt.Sprint(i), e)
	}
	var err error
	if h.first, err = Compile(Input{Local: h.mine, Profiles: h.profiles, Members: h.members}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.enf.ApplyIndexed(h.first, h.members, h.members.Delta()); err != nil {
		b.Fatal(err)
	}
	return h
}

// here times a new endpoint on this host (chains compiled, the difference
// sent), then puts the host back.
func (h *policyHost) here(b *testing.B, extra Endpoint) time.Duration {
	extra.Iface = "calixxxxxxxxxxx"
	start := time.Now()
	h.members.Put("extra", extra)
	s, err := Compile(Input{Local: append(h.mine, extra), Profiles: h.profiles, Members: h.members})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.enf.ApplyIndexed(s, h.members, h.members.Delta()); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	h.members.Delete("extra")
	if _, err := h.enf.ApplyIndexed(h.first, h.members, h.members.Delta()); err != nil {
		b.Fatal(err)
	}
	return took
}

// BenchmarkPolicyChange: what one endpoint change costs a host (compile and
// nft) with 20,000 endpoints in the cluster and 50 on the host, in one run:
// against the baseline of compiling everything from the whole cluster and
// replacing the table, an endpoint on another host (an element update) and
// one on this host (chains as a difference, sets untouched); and the one on
// this host against the same host in a cluster of 100 (flat: ≤ 1.2).
// Targets: a new endpoint in every host's sets < 500 ms.
func BenchmarkPolicyChange(b *testing.B) {
	big, small := plantPolicy(b, 20000, 50), plantPolicy(b, 100, 50)
	var whole, elsewhere, here, hereSmall time.Duration
	for i := 0; i < b.N; i++ {
		extra := ep("", netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}).String(), "net1")
		// Baseline: the whole cluster compiled, the table replaced.
		start := time.Now()
		s, err := Compile(Input{Local: big.mine, All: append(big.all, extra), Profiles: big.profiles})
		if err != nil {
			b.Fatal(err)
		}
		base, _ := NewEnforcer(big.enf.nft...)
		if _, err := base.Apply(s); err != nil {
			b.Fatal(err)
		}
		whole += time.Since(start)
		// The same endpoint elsewhere, through the index.
		if _, err := big.enf.ApplyIndexed(big.first, big.members, big.members.Delta()); err != nil { // back to the installed start
			b.Fatal(err)
		}
		start = time.Now()
		big.members.Put("extra", extra)
		if _, err := big.enf.ApplyElements(big.members.Delta()); err != nil {
			b.Fatal(err)
		}
		elsewhere += time.Since(start)
		big.members.Delete("extra")
		if _, err := big.enf.ApplyElements(big.members.Delta()); err != nil {
			b.Fatal(err)
		}
		here += big.here(b, extra)
		hereSmall += small.here(b, extra)
	}
	n := float64(b.N)
	b.ReportMetric(float64(whole.Milliseconds())/n, "whole-ms/change")
	b.ReportMetric(float64(elsewhere.Milliseconds())/n, "elsewhere-ms/change")
	b.ReportMetric(float64(here.Milliseconds())/n, "here-ms/change")
	b.ReportMetric(float64(elsewhere)/float64(whole), "elsewhere/whole")
	b.ReportMetric(float64(here)/float64(whole), "here/whole")
	b.ReportMetric(float64(here)/float64(hereSmall), "here-20000/here-100")
}
