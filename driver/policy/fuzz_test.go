package policy

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzSelector: the selector parser never panics, and its errors quote
// the selector.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{"", "all()", "a == 'b' && !has(c)", "x in {'1','2'} || (y != \"z\")", "((", "a not in {", "!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		sel, err := ParseSelector(src)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", src)) {
				t.Fatalf("error %v does not quote the selector", err)
			}
			return
		}
		sel.Matches(map[string]string{"a": "b", "x": "1"})
	})
}
