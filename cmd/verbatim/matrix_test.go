package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// apiServer is the API's handler over e's stores, its verifier's clock
// shifted by skew (a day later: every token issued now has expired).
func (e *cliEnv) apiServer(skew time.Duration) *httptest.Server {
	t := e.t
	t.Helper()
	cfg := auth.Config{Issuer: stacktest.Env(t, "VERBATIM_OIDC_ISSUER"), Audiences: []string{stacktest.Env(t, "VERBATIM_OIDC_CLIENT_ID")},
		CAFile: stacktest.Env(t, "VERBATIM_TLS_CA"), Now: func() time.Time { return time.Now().Add(skew) }}
	auth.DexClaims(&cfg)
	v, err := auth.NewVerifier(e.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, db, err := search.Open(e.ctx, search.Config{Addr: stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR"), Database: e.db,
		User: os.Getenv("VERBATIM_CLICKHOUSE_USER"), Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	km, err := keys.OpenKeyring(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}
	kcfg := kafkaclient.Config{Brokers: strings.Split(e.brokers, ",")}
	regCl, err := kafkaclient.New(kcfg, keyreg.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg := keyreg.Start(regCl)
	t.Cleanup(reg.Close)
	auditCl, err := kafkaclient.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auditCl.Close)
	srv, err := api.New(api.Config{Verifier: v, Conn: conn, Database: db, Playback: &playback.Opener{Keys: km, Store: store, Registry: reg},
		Audit: api.KafkaAuditor{Client: auditCl}, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

// TestTenantIsolationMatrix: every operation of /openapi.json, for every
// role of the demo tenant and a supervisor of another tenant, with a
// valid token, none, an expired one, one issued to another application
// and one signed by another key, gets the status its rights say; and no
// response to the other tenant holds anything of demo's calls.
func TestTenantIsolationMatrix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "matrix")
	e.record(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	now, later := e.apiServer(0), e.apiServer(25*time.Hour)
	calls := e.find("--limit", "10")
	if len(calls) != 2 {
		t.Fatalf("%d calls recorded", len(calls))
	}
	callID, sipCallID := calls[0].CallID, calls[0].SIPCallID
	users := map[string]string{
		"user": "user@demo.example", "agent": "agent@demo.example", "supervisor": "supervisor@demo.example",
		"administrator": "admin@demo.example", "auditor": "auditor@demo.example", "acme supervisor": "supervisor@acme.example",
	}
	forged := stacktest.ForgedToken(t, map[string]any{"iss": stacktest.Env(t, "VERBATIM_OIDC_ISSUER"), "aud": "verbatim", "sub": "mallory",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "groups": []string{"tenant:demo", "role:administrator"}})
	ops := []string{"/v1/me", "/v1/calls", "/v1/calls/" + callID, "/v1/calls/" + callID + "/recording"}
	// The status of each operation for a valid token, by identity.
	want := map[string][4]int{
		"user":            {200, 200, 404, 404}, // owns neither call (party 1001)
		"agent":           {200, 200, 200, 200}, // party sipp: both calls are theirs
		"supervisor":      {200, 200, 200, 200},
		"administrator":   {200, 200, 200, 200},
		"auditor":         {200, 403, 403, 403},
		"acme supervisor": {200, 200, 404, 404},
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Paths) != len(ops) {
		t.Fatalf("the document has %d paths, the matrix %d: add the new operations here", len(doc.Paths), len(ops))
	}
	get := func(ts *httptest.Server, path, tok string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cells := 0
	for who, user := range users {
		valid := stacktest.DexToken(t, user)
		otherApp := stacktest.DexTokenFor(t, "other-app", user)
		for i, op := range ops {
			for _, c := range []struct {
				kind   string
				ts     *httptest.Server
				tok    string
				status int
			}{
				{"valid", now, valid, want[who][i]},
				{"none", now, "", 401},
				{"expired", later, valid, 401},
				{"another application's", now, otherApp, 401},
				{"signed by another key", now, forged, 401},
			} {
				got, body := get(c.ts, op, c.tok)
				cells++
				if got != c.status {
					t.Errorf("%s, %s token, GET %s: %d, want %d: %s", who, c.kind, op, got, c.status, body)
				}
				if who == "acme supervisor" && (strings.Contains(body, callID) && !strings.Contains(body, "not found") || strings.Contains(body, sipCallID) ||
					strings.Contains(body, `"demo"`)) {
					t.Errorf("acme supervisor, GET %s: the response holds demo's data: %s", op, body)
				}
			}
		}
	}
	t.Logf("%d cells of %d operations x %d identities x 5 tokens", cells, len(ops), len(users))
}
