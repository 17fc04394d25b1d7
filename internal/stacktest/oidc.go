package stacktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DexToken signs user in to the local stack's Dex with the password grant
// (VERBATIM_OIDC_ISSUER, _CLIENT_ID, _CLIENT_SECRET, VERBATIM_DEX_PASSWORD,
// its CA in VERBATIM_TLS_CA) and returns the ID token: a real token, signed
// by Dex's keys, with the user's groups.
func DexToken(t testing.TB, user string) string {
	t.Helper()
	return DexTokenFor(t, Env(t, "VERBATIM_OIDC_CLIENT_ID"), user)
}

// DexTokenFor is DexToken for another of the stack's Dex clients
// ("other-app": a token issued to another application).
func DexTokenFor(t testing.TB, client, user string) string {
	t.Helper()
	issuer := Env(t, "VERBATIM_OIDC_ISSUER")
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {Env(t, "VERBATIM_DEX_PASSWORD")},
		"scope": {"openid email profile groups"}}
	req, err := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, Env(t, "VERBATIM_OIDC_CLIENT_SECRET"))
	resp, err := TLSClient(t).Do(req)
	if err != nil {
		t.Fatalf("dex token for %s: %v", user, err)
	}
	defer resp.Body.Close()
	var body struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
		Desc    string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.IDToken == "" {
		t.Fatalf("dex token for %s: HTTP %d %s %s (%v)", user, resp.StatusCode, body.Error, body.Desc, err)
	}
	return body.IDToken
}

// TLSClient is an HTTP client that trusts the local stack's CA
// (VERBATIM_TLS_CA) only.
func TLSClient(t testing.TB) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(Env(t, "VERBATIM_TLS_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("VERBATIM_TLS_CA holds no certificate")
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// ForgedToken is a JWT with claims, signed (ES256) by a key of its own:
// what an attacker who knows the issuer and audience can make.
func ForgedToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "forged"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
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
