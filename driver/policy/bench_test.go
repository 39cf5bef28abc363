package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// BenchmarkPolicyChange: what one endpoint change costs a host (compile and
// nft, in a namespace of its own) with 20,000 endpoints in the cluster and
// 50 on the host, against the baseline of compiling everything from the
// whole cluster and replacing the table, in one run: an endpoint on another
// host (an element update), one on this host (chains and elements as a
// difference). Targets: a new endpoint in every host's sets < 500 ms.
func BenchmarkPolicyChange(b *testing.B) {
	const cluster, local = 20000, 50
	profiles := map[string]datastore.Profile{}
	var all, mine []Endpoint
	for i := 0; i < cluster; i++ {
		net := fmt.Sprintf("net%d", i%10)
		profiles[net] = profileOf(net)
		e := ep("", netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)}).String(), net)
		if i < local {
			e.Iface = fmt.Sprintf("cali%011d", i)
			mine = append(mine, e)
		}
		all = append(all, e)
	}
	host, enf := enforcerIn(b, "tpolb-")
	_ = host
	members := NewMembers()
	members.SetProfiles(profiles)
	for i, e := range all {
		members.Put(fmt.Sprint(i), e)
	}
	first, err := Compile(Input{Local: mine, Profiles: profiles, Members: members})
	if err != nil {
		b.Fatal(err)
	}
	members.Delta()
	if _, err := enf.Apply(first); err != nil {
		b.Fatal(err)
	}
	var whole, elsewhere, here time.Duration
	for i := 0; i < b.N; i++ {
		extra := ep("", netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}).String(), "net1")
		// Baseline: the whole cluster compiled, the table replaced.
		start := time.Now()
		s, err := Compile(Input{Local: mine, All: append(all, extra), Profiles: profiles})
		if err != nil {
			b.Fatal(err)
		}
		base, _ := NewEnforcer(enf.nft...)
		if _, err := base.Apply(s); err != nil {
			b.Fatal(err)
		}
		whole += time.Since(start)
		// The same endpoint elsewhere, through the index.
		if _, err := enf.Apply(first); err != nil { // back to the installed start
			b.Fatal(err)
		}
		start = time.Now()
		members.Put("extra", extra)
		if _, err := enf.ApplyElements(members.Delta()); err != nil {
			b.Fatal(err)
		}
		elsewhere += time.Since(start)
		// A new endpoint on this host.
		extra.Iface = "calixxxxxxxxxxx"
		start = time.Now()
		members.Put("extra", extra)
		s, err = Compile(Input{Local: append(mine, extra), Profiles: profiles, Members: members})
		if err != nil {
			b.Fatal(err)
		}
		members.Delta()
		if _, err := enf.Apply(s); err != nil {
			b.Fatal(err)
		}
		here += time.Since(start)
		members.Delete("extra")
		members.Delta()
	}
	n := float64(b.N)
	b.ReportMetric(float64(whole.Milliseconds())/n, "whole-ms/change")
	b.ReportMetric(float64(elsewhere.Milliseconds())/n, "elsewhere-ms/change")
	b.ReportMetric(float64(here.Milliseconds())/n, "here-ms/change")
	b.ReportMetric(float64(elsewhere)/float64(whole), "elsewhere/whole")
	b.ReportMetric(float64(here)/float64(whole), "here/whole")
}
