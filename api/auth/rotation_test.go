package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbatimrec/verbatim/api/auth"
)

// issuer is a minimal OpenID provider for one unit test: a discovery
// document and a key set that the test rotates. (Integration tests use
// the local stack's Dex, which rotates its keys every six hours.)
type issuer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey // published, by kid
	fetches atomic.Int32
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{keys: map[string]*ecdsa.PrivateKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys",
			"authorization_endpoint": is.srv.URL + "/auth", "token_endpoint": is.srv.URL + "/token", "id_token_signing_alg_values_supported": []string{"ES256"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for kid, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"})
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// publish replaces the published keys with a new one, kid; it returns
// the key.
func (is *issuer) publish(t *testing.T, kid string, keep ...string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	for old := range is.keys {
		if !slices.Contains(keep, old) {
			delete(is.keys, old)
		}
	}
	is.keys[kid] = k
	return k
}

func (is *issuer) token(t *testing.T, kid string, k *ecdsa.PrivateKey) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"iss": is.srv.URL, "aud": "verbatim", "sub": "s1", "exp": time.Now().Add(time.Hour).Unix(),
		"iat": time.Now().Unix(), "groups": []string{"tenant:demo", "role:supervisor"}})
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKeyRotation: a token signed with a key the provider published
// after the verifier started verifies (the key set is fetched again for
// a key id not seen, not on every token); once the provider has retired
// a key and the new set is fetched, tokens of the retired key are
// refused.
func TestKeyRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	is := newIssuer(t)
	k1 := is.publish(t, "k1")
	cfg := auth.Config{Issuer: is.srv.URL, Audiences: []string{"verbatim"}}
	auth.DexClaims(&cfg)
	v, err := auth.NewVerifier(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := is.token(t, "k1", k1)
	for range 3 {
		if _, err := v.Verify(ctx, old); err != nil {
			t.Fatalf("k1: %v", err)
		}
	}
	if n := is.fetches.Load(); n != 1 {
		t.Fatalf("key set fetched %d times for three tokens of one key", n)
	}
	// Rotation: k2 published beside k1 (providers publish the next key
	// before signing with it), then k1 retired.
	k2 := is.publish(t, "k2", "k1")
	// go-oidc hands a verification that arrives while a fetch of the key
	// set is in flight that fetch's result, and swaps its cache only after
	// it has answered (under -race, on a loaded machine, a new key's first
	// tokens can meet the set before it, and a retired key's tokens the
	// cache before the swap). So each check below is asked again until it
	// holds, within the test's deadline: the swap is the event.
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: never", what)
			case <-time.After(time.Millisecond): // the interval of asking
			}
		}
	}
	tok2 := is.token(t, "k2", k2)
	eventually("a token of the new key verifies", func() bool {
		id, err := v.Verify(ctx, tok2)
		return err == nil && id.Tenant == "demo"
	})
	if n := is.fetches.Load(); n < 2 || n > 4 {
		t.Fatalf("key set fetched %d times, want 2 to 4 (again for the new key, not per token)", n)
	}
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("k1 while still published: %v", err)
	}
	k3 := is.publish(t, "k3") // k1 and k2 retired
	tok3 := is.token(t, "k3", k3)
	eventually("a token of k3 verifies", func() bool {
		_, err := v.Verify(ctx, tok3)
		return err == nil
	})
	eventually("a token of a retired key is refused", func() bool {
		_, err := v.Verify(ctx, old)
		return errors.Is(err, auth.ErrToken)
	})
}
