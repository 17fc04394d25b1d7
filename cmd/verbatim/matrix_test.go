package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
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
	kcfg := stacktest.KafkaFor(strings.Split(e.brokers, ","), "")
	regCl, err := kafkaclient.New(kcfg, keyreg.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg := keyreg.Start(regCl)
	t.Cleanup(reg.Close)
	policyCl, err := kafkaclient.New(kcfg, api.PolicyConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	policies := api.StartPolicies(policyCl)
	t.Cleanup(policies.Close)
	auditCl, err := kafkaclient.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auditCl.Close)
	writeCl, err := kafkaclient.New(kcfg, kgo.TransactionalID(fmt.Sprintf("verbatim-api-matrix-%d", skew)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(writeCl.Close)
	writer := &api.KafkaWriter{Client: writeCl}
	lcCl, err := kafkaclient.New(kcfg, lifecycle.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	lcReg := lifecycle.StartRegistry(lcCl)
	t.Cleanup(lcReg.Close)
	lc, err := lifecycle.New(lifecycle.Config{Kafka: kcfg, Writer: writer, Registry: lcReg, Conn: conn, Database: db, Store: store, Producer: "verbatim-api"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Verifier: v, Conn: conn, Database: db, Playback: &playback.Opener{Keys: km, Store: store, Registry: reg},
		Audit: api.KafkaAuditor{Client: auditCl}, Writer: writer, Lifecycle: lc, Policies: policies, SpoolDir: t.TempDir()})
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
	e, ctx := g711Env(t, "matrix", 4*time.Minute)
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
	// An export of demo's, done, for the export operations.
	exportID := demoExport(ctx, t, now, stacktest.DexToken(t, users["supervisor"]))
	type op struct{ method, path, body string }
	ops := []op{{"GET", "/v1/me", ""}, {"GET", "/v1/calls", ""}, {"GET", "/v1/calls/" + callID, ""}, {"GET", "/v1/calls/" + callID + "/recording", ""},
		{"POST", "/v1/calls/" + callID + "/metadata", `{"source": "matrix", "agent_id": "a1"}`},
		{"POST", "/v1/calls/" + callID + "/comments", `{"text": "matrix"}`},
		{"POST", "/v1/calls/" + callID + "/tags", `{"tags": ["matrix"]}`},
		{"POST", "/v1/exports", `{"call_id": "none"}`}, {"GET", "/v1/exports/" + exportID, ""}, {"GET", "/v1/exports/" + exportID + "/download", ""},
		{"POST", "/v1/calls/" + callID + "/evaluations", `{"form": "matrix", "criteria": [{"name": "greeting", "score": 1, "max": 1}]}`},
		{"POST", "/v1/metadata", `{"source": "matrix", "sip_call_id": "` + sipCallID + `"}`},
		// A group nobody is in; in this order, so the administrator's
		// grant and revocation find the policy its PUT made.
		{"GET", "/v1/groups", ""}, {"PUT", "/v1/groups/matrix", `{"permissions": ["play"]}`},
		{"PUT", "/v1/groups/matrix/permissions/comment", ""}, {"DELETE", "/v1/groups/matrix/permissions/comment", ""},
		{"DELETE", "/v1/groups/matrix", ""},
		// The audit log: nothing projected into it here.
		{"GET", "/v1/audit", ""}, {"GET", "/v1/audit/checkpoint", ""}, {"GET", "/v1/audit/proof?event_id=none", ""}, {"GET", "/v1/audit/consistency?old=1&new=2", ""},
		{"GET", "/v1/subjects/report?party=sip%3Asipp%4010.0.2.20%3A5060", ""},
		// Holds, erasure and early deletion: of calls that do not exist,
		// or of a subject with no calls.
		{"GET", "/v1/holds", ""}, {"POST", "/v1/holds", `{"label": "matrix", "reason": "matrix", "call_ids": ["none"]}`},
		{"POST", "/v1/holds/none/release", ""}, {"POST", "/v1/holds/none/release/approve", ""},
		{"POST", "/v1/erasure", `{"subject": "nobody@example.com", "reason": "matrix"}`}, {"GET", "/v1/erasure/none", ""},
		{"POST", "/v1/deletions", `{"call_ids": ["none"], "reason": "matrix"}`}, {"POST", "/v1/deletions/none/approve", ""}}
	// The status of each operation for a valid token, by identity. No
	// group has a policy: each role's defaults (a user may not score).
	want := map[string][]int{
		"user":            {200, 200, 404, 404, 404, 404, 404, 403, 403, 403, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403}, // owns neither call (party 1001)
		"agent":           {200, 200, 200, 200, 201, 201, 201, 403, 403, 403, 403, 201, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403}, // party sipp: both calls are theirs
		"supervisor":      {200, 200, 200, 200, 201, 201, 201, 202, 200, 200, 201, 201, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403},
		"administrator":   {200, 200, 200, 200, 201, 201, 201, 202, 200, 200, 201, 201, 200, 200, 200, 200, 204, 403, 403, 403, 403, 200, 200, 404, 404, 404, 200, 404, 404, 404},
		"auditor":         {200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200, 404, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403, 403},
		"acme supervisor": {200, 200, 404, 404, 404, 404, 404, 202, 404, 404, 404, 404, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403},
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	documented := 0
	for _, methods := range doc.Paths {
		documented += len(methods)
	}
	if documented != len(ops) {
		t.Fatalf("the document has %d operations, the matrix %d: add the new ones here", documented, len(ops))
	}
	do := func(ts *httptest.Server, o op, tok string) (int, string) {
		t.Helper()
		var body io.Reader
		if o.body != "" {
			body = strings.NewReader(o.body)
		}
		req, err := http.NewRequestWithContext(ctx, o.method, ts.URL+o.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if o.body != "" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "matrix-1")
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
		for i, o := range ops {
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
				got, body := do(c.ts, o, c.tok)
				cells++
				if got != c.status {
					t.Errorf("%s, %s token, %s %s: %d, want %d: %s", who, c.kind, o.method, o.path, got, c.status, body)
				}
				if who == "acme supervisor" && ((strings.Contains(body, callID) || strings.Contains(body, sipCallID)) && !strings.Contains(body, "not found") ||
					strings.Contains(body, `"demo"`)) {
					t.Errorf("acme supervisor, %s %s: the response holds demo's data: %s", o.method, o.path, body)
				}
			}
		}
	}
	t.Logf("%d cells of %d operations x %d identities x 5 tokens", cells, len(ops), len(users))
}

// demoExport starts an export as tok on ts and returns its id once done.
func demoExport(ctx context.Context, t *testing.T, ts *httptest.Server, tok string) string {
	t.Helper()
	call := func(method, path, body string) map[string]any {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	job := call("POST", "/v1/exports", `{}`)
	id, _ := job["export_id"].(string)
	for job["state"] == "running" {
		select {
		case <-ctx.Done():
			t.Fatal("export still running")
		case <-time.After(50 * time.Millisecond): // the interval of asking
		}
		job = call("GET", "/v1/exports/"+id, "")
	}
	if job["state"] != "done" {
		t.Fatalf("export: %v", job)
	}
	return id
}
