package main

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestWebSignIn: the web page's sign-in, as a browser does it, through
// Dex's real login form: the authorisation code flow with PKCE run by the
// server, which then holds the session in an encrypted cookie. The
// signed-in browser reads the API with it; a change needs the page's
// header besides (no cross-site request forgery); a tampered cookie is
// refused.
func TestWebSignIn(t *testing.T) {
	e, ctx := g711Env(t, "web", 2*time.Minute)
	// The port the stack's Dex client has as its redirect URI.
	base := e.startAPI("--listen", "127.0.0.1:18443", "--public-url", "https://127.0.0.1:18443")
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := stacktest.TLSClient(t)
	browser.Jar = jar
	get := func(u string) (*http.Response, string) {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, page := get(base + "/"); resp.StatusCode != 200 || !strings.Contains(page, "<title>Verbatim</title>") {
		t.Fatalf("page: %d", resp.StatusCode)
	}
	if resp, _ := get(base + "/v1/me"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("signed out, /v1/me: %d", resp.StatusCode)
	}
	// Sign in: to Dex (PKCE S256 in the request), its form, back.
	noFollow := *browser
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	start, err := noFollow.Get(base + "/auth/login")
	if err != nil {
		t.Fatal(err)
	}
	start.Body.Close()
	toDex, err := url.Parse(start.Header.Get("Location"))
	if err != nil || start.StatusCode != http.StatusFound || toDex.Query().Get("code_challenge_method") != "S256" ||
		toDex.Query().Get("code_challenge") == "" || toDex.Query().Get("state") == "" || toDex.Query().Get("response_type") != "code" {
		t.Fatalf("sign-in start: %d to %s: want the code flow with PKCE (S256) and a state", start.StatusCode, toDex)
	}
	resp, form := get(toDex.String())
	action := regexp.MustCompile(`<form[^>]*method="post"[^>]*action="([^"]+)"`).FindStringSubmatch(form)
	if action == nil {
		action = regexp.MustCompile(`<form[^>]*action="([^"]+)"[^>]*method="post"`).FindStringSubmatch(form)
	}
	if action == nil || !strings.HasPrefix(resp.Request.URL.String(), stacktest.Env(t, "VERBATIM_OIDC_ISSUER")) {
		t.Fatalf("not Dex's login form at %s:\n%s", resp.Request.URL, form)
	}
	target, err := resp.Request.URL.Parse(html.UnescapeString(action[1]))
	if err != nil {
		t.Fatal(err)
	}
	resp, err = browser.PostForm(target.String(), url.Values{"login": {"supervisor@demo.example"}, "password": {stacktest.Env(t, "VERBATIM_DEX_PASSWORD")}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Request.URL.String() != base+"/" || !strings.Contains(string(page), "<title>Verbatim</title>") {
		t.Fatalf("after signing in: %s (%d)", resp.Request.URL, resp.StatusCode)
	}
	resp, me := get(base + "/v1/me")
	if resp.StatusCode != 200 || !strings.Contains(me, `"tenant": "demo"`) || !strings.Contains(me, "supervisor") {
		t.Fatalf("signed in, /v1/me: %d %s", resp.StatusCode, me)
	}
	if resp, calls := get(base + "/v1/calls"); resp.StatusCode != 200 || strings.Count(calls, `"call_id"`) != 2 {
		t.Fatalf("signed in, /v1/calls: %d %s", resp.StatusCode, calls)
	}
	// A change with the cookie alone (what a forged cross-site form
	// sends) is refused; with the page's header it is made.
	calls := e.find()
	post := func(withHeader bool) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/calls/"+calls[0].CallID+"/metadata", strings.NewReader(`{"source": "web"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "web-1")
		if withHeader {
			req.Header.Set("X-Verbatim-Request", "1")
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(false); got != http.StatusForbidden {
		t.Fatalf("a change with the cookie alone: %d, want 403", got)
	}
	if got := post(true); got != http.StatusCreated {
		t.Fatalf("a change from the page: %d, want 201", got)
	}
	// Another API server behind the same address shares the session key
	// (the stack's VERBATIM_SESSION_KEY_FILE): the session is valid
	// there; on a server with another key it is not. A key file others
	// may read is refused.
	shared := e.startAPI("--public-url", "https://127.0.0.1:18443")
	if resp, me := get(shared + "/v1/me"); resp.StatusCode != 200 || !strings.Contains(me, `"tenant": "demo"`) {
		t.Fatalf("the session on a second server with the shared key: %d %s", resp.StatusCode, me)
	}
	otherKey := filepath.Join(t.TempDir(), "session.key")
	if err := os.WriteFile(otherKey, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := e.startAPI("--public-url", "https://127.0.0.1:18443", "--session-key-file", otherKey)
	if resp, _ := get(other + "/v1/me"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the session on a server with another key: %d, want 401", resp.StatusCode)
	}
	if err := os.Chmod(otherKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runOut(ctx, "api", "--listen", "127.0.0.1:0", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects,
		"--database", e.db, "--public-url", "https://127.0.0.1:18443", "--session-key-file", otherKey); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a session key others may read: %v\n%s", err, out)
	}

	// A cookie altered by the client is not a session.
	u, _ := url.Parse(base)
	for _, c := range jar.Cookies(u) {
		if c.Name == "verbatim_session" {
			c.Value = c.Value[:len(c.Value)-2] + "AA"
			jar.SetCookies(u, []*http.Cookie{c})
		}
	}
	if resp, _ := get(base + "/v1/me"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("tampered session cookie: %d, want 401", resp.StatusCode)
	}
}
