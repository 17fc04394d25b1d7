package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// dexVerifier verifies the local stack's Dex tokens (DexClaims), with the
// configuration changed by mod.
func dexVerifier(t *testing.T, mod func(*auth.Config)) (*auth.Verifier, error) {
	t.Helper()
	cfg := auth.Config{Issuer: stacktest.Env(t, "VERBATIM_OIDC_ISSUER"), Audiences: []string{stacktest.Env(t, "VERBATIM_OIDC_CLIENT_ID")},
		CAFile: stacktest.Env(t, "VERBATIM_TLS_CA")}
	auth.DexClaims(&cfg)
	if mod != nil {
		mod(&cfg)
	}
	return auth.NewVerifier(context.Background(), cfg)
}

func mustVerifier(t *testing.T, mod func(*auth.Config)) *auth.Verifier {
	t.Helper()
	v, err := dexVerifier(t, mod)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDexTokens: real tokens from the local stack's Dex (password grant)
// give the identity their claims say; every other token is refused with
// the reason.
func TestDexTokens(t *testing.T) {
	ctx := context.Background()
	v := mustVerifier(t, nil)
	sup := stacktest.DexToken(t, "supervisor@demo.example")
	id, err := v.Verify(ctx, sup)
	if err != nil {
		t.Fatal(err)
	}
	if id.Tenant != "demo" || !slices.Equal(id.Roles, []auth.Role{auth.RoleSupervisor}) || !slices.Equal(id.Groups, []string{"sales"}) ||
		id.Email != "supervisor@demo.example" || id.Subject == "" || time.Until(id.Expiry) < time.Hour {
		t.Fatalf("supervisor: %+v", id)
	}
	user, err := v.Verify(ctx, stacktest.DexToken(t, "user@demo.example"))
	if err != nil || !user.Has(auth.RoleUser) || user.Has(auth.RoleSupervisor) || !slices.Equal(user.Parties, []string{"1001"}) {
		t.Fatalf("user: %+v, %v", user, err)
	}
	acme, err := v.Verify(ctx, stacktest.DexToken(t, "supervisor@acme.example"))
	if err != nil || acme.Tenant != "acme" {
		t.Fatalf("acme: %+v, %v", acme, err)
	}

	refused := func(name string, v *auth.Verifier, tok, why string) {
		t.Helper()
		_, err := v.Verify(ctx, tok)
		if !errors.Is(err, auth.ErrToken) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v, want refused (%q)", name, err, why)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	refused("wrong audience", mustVerifier(t, func(c *auth.Config) { c.Audiences = []string{"another-app"} }), sup, "not to this API")
	refused("expired", mustVerifier(t, func(c *auth.Config) { c.Now = func() time.Time { return id.Expiry.Add(time.Minute) } }), sup, "expired")
	refused("no tenant claim", mustVerifier(t, func(c *auth.Config) { c.Tenant = auth.Claim{Path: "tenant"} }), sup, "no tenant")
	refused("no known role", mustVerifier(t, func(c *auth.Config) { c.Roles = auth.Claim{Path: "groups", Prefix: "verbatim-role:"} }), sup, "no Verbatim role")

	// The payload changed (another tenant), the signature kept.
	parts := strings.Split(sup, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(string(payload), "tenant:demo", "tenant:acme", 1)
	refused("tampered", v, parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(other))+"."+parts[2], "signature")
	refused("unsigned", v, base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))+"."+parts[1]+".", "")
	refused("garbage", v, "not.a.token", "")

	// Signed by a key of its own, with Dex's issuer, audience and claims.
	forged := stacktest.ForgedToken(t, map[string]any{"iss": stacktest.Env(t, "VERBATIM_OIDC_ISSUER"), "aud": "verbatim", "sub": "mallory",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "groups": []string{"tenant:demo", "role:administrator"}})
	refused("forged", v, forged, "")

	if _, err := dexVerifier(t, func(c *auth.Config) { c.Algorithms = []string{"HS256"} }); err == nil {
		t.Error("a verifier accepting HS256 (a shared secret) was made")
	}
}
