package ingest

import (
	"slices"
	"strings"
	"testing"
)

func TestSessionUUIDs(t *testing.T) {
	for v, want := range map[string][]string{
		"ab30317f1a784dc48ff824d0d3715d86;remote=47755A9DE7794BA387653F2099600EF2": {"ab30317f1a784dc48ff824d0d3715d86", "47755a9de7794ba387653f2099600ef2"},
		"ab30317f1a784dc48ff824d0d3715d86;remote=00000000000000000000000000000000": {"ab30317f1a784dc48ff824d0d3715d86"},
		"ab30317f1a784dc48ff824d0d3715d86":                                         {"ab30317f1a784dc48ff824d0d3715d86"},
		"2d8abbf0769c66e15bb349f509693d60@52.57.92.239":                            nil, // a Call-ID
		"hvij5wK4Wx": nil,
		"":           nil,
	} {
		if got := sessionUUIDs(v); !slices.Equal(got, want) {
			t.Errorf("sessionUUIDs(%q) = %v, want %v", v, got, want)
		}
	}
	// One conversation, seen from either side, shares a key; the tenant
	// is in every key.
	a := sessionKeys("t1", []string{"ab30317f1a784dc48ff824d0d3715d86;remote=00000000000000000000000000000000"}, []string{"x@h"})
	b := sessionKeys("t1", []string{"47755a9de7794ba387653f2099600ef2;remote=ab30317f1a784dc48ff824d0d3715d86"}, nil)
	c := sessionKeys("t2", []string{"ab30317f1a784dc48ff824d0d3715d86"}, nil)
	if !slices.ContainsFunc(a, func(k string) bool { return slices.Contains(b, k) }) || slices.ContainsFunc(a, func(k string) bool { return slices.Contains(c, k) }) {
		t.Fatalf("keys %v %v %v", a, b, c)
	}
}

// FuzzSessionUUIDs: any header value gives UUIDs of 32 lower-case hex
// digits, never the null one, and at most one per part.
func FuzzSessionUUIDs(f *testing.F) {
	f.Add("ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2")
	f.Add("2d8abbf0769c66e15bb349f509693d60@52.57.92.239")
	f.Fuzz(func(t *testing.T, v string) {
		got := sessionUUIDs(v)
		if len(got) > strings.Count(v, ";")+1 {
			t.Fatalf("%d UUIDs from %q", len(got), v)
		}
		for _, u := range got {
			if !isUUID32(u) || u != strings.ToLower(u) || u == strings.Repeat("0", 32) {
				t.Fatalf("UUID %q from %q", u, v)
			}
		}
	})
}
