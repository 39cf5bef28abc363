package policy

import (
	"strings"
	"testing"
)

func TestSelectors(t *testing.T) {
	labels := map[string]string{"tabby.network": "net1", "role": "db", "tier": "back"}
	cases := map[string]bool{
		"":                                 true,
		"all()":                            true,
		"tabby.network == 'net1'":          true,
		`tabby.network == "net2"`:          false,
		"role != 'web'":                    true,
		"has(tier)":                        true,
		"!has(tier)":                       false,
		"has(zone)":                        false,
		"role in {'db', 'cache'}":          true,
		"role not in {'db'}":               false,
		"role == 'db' && tier == 'front'":  false,
		"role == 'web' || tier == 'back'":  true,
		"!(role == 'db' && has(tier))":     false,
		"zone != 'x'":                      true, // a missing label differs from any value
		"(role == 'db') && !has(zone)":     true,
		"tabby.network in {'net1','net2'}": true,
	}
	for src, want := range cases {
		s, err := ParseSelector(src)
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if got := s.Matches(labels); got != want {
			t.Errorf("%q matches = %v, want %v", src, got, want)
		}
	}
}

func TestSelectorErrorsNameTheInput(t *testing.T) {
	for _, src := range []string{"role ==", "role = 'db'", "has(role", "role == 'db' &&", "(role == 'db'", "role in {'a'", "'x' == role"} {
		_, err := ParseSelector(src)
		if err == nil || !strings.Contains(err.Error(), src) {
			t.Errorf("%q: want an error naming it, got %v", src, err)
		}
	}
}
