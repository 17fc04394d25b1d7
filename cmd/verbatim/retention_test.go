package main

import (
	"testing"
	"time"
)

// TestParseRetention: per tenant, * for the others; days or durations;
// malformed, repeated or negative values refused with the reason.
func TestParseRetention(t *testing.T) {
	f, err := parseRetention("demo=2557d, acme=87600h, *=365d")
	if err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]time.Duration{"demo": 2557 * 24 * time.Hour, "acme": 87600 * time.Hour, "other": 365 * 24 * time.Hour} {
		if got := f(tenant); got != want {
			t.Errorf("%s: %v, want %v", tenant, got, want)
		}
	}
	if f, err := parseRetention(""); err != nil || f != nil {
		t.Errorf("empty: %v", err)
	}
	if f, _ := parseRetention("demo=1d"); f("acme") != 0 {
		t.Error("a tenant not listed, without *, is locked")
	}
	for _, bad := range []string{"demo", "=1d", "demo=", "demo=xd", "demo=-1h", "demo=1d,demo=2d", "Bad Tenant=1d", "demo=99999999d"} {
		if _, err := parseRetention(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
