package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestGroupPolicies: a CTI integration attaches skill groups to the
// G.711 capture's calls by SIP Call-ID, then by the contact centre's
// peripheral id; an administrator gives the supervisor's group "sales"
// a policy (play and comment, the calls of skill group sales) and the
// supervisor finds and opens only that call and may not download,
// export or score it; a grant and a revocation hold at the supervisor's
// next request, on this API server and on one started afterwards;
// removing the policy gives the role's defaults back. An evaluation is
// scored into the call's metadata, and every change is on the audit
// topic.
func TestGroupPolicies(t *testing.T) {
	e, ctx := g711Env(t, "policy", 4*time.Minute)
	ts := e.apiServer(0)
	calls := e.find("--limit", "10")
	if len(calls) != 2 {
		t.Fatalf("%d calls recorded", len(calls))
	}
	a, b := calls[0], calls[1]
	admin, sup := stacktest.DexToken(t, "admin@demo.example"), stacktest.DexToken(t, "supervisor@demo.example")
	do := func(srv *httptest.Server, tok, method, path, body string, want int) []byte {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "k-"+time.Now().Format("150405.000000000"))
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	found := func(srv *httptest.Server, tok string) []string {
		t.Helper()
		var p struct{ Calls []search.Result }
		if err := json.Unmarshal(do(srv, tok, "GET", "/v1/calls", "", 200), &p); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range p.Calls {
			ids = append(ids, c.CallID)
		}
		return ids
	}

	// Metadata by SIP Call-ID, then (once projected) by peripheral id.
	var attached struct {
		Attached []struct {
			CallID  string `json:"call_id"`
			EventID string `json:"event_id"`
		}
	}
	if err := json.Unmarshal(do(ts, admin, "POST", "/v1/metadata", `{"source": "cti", "sip_call_id": "`+a.SIPCallID+`", "skill_group": "sales", "peripheral_ids": ["pk-a"]}`, 201), &attached); err != nil ||
		len(attached.Attached) != 1 || attached.Attached[0].CallID != a.CallID {
		t.Fatalf("by SIP Call-ID: %+v %v", attached, err)
	}
	do(ts, admin, "POST", "/v1/metadata", `{"source": "cti", "call_id": "`+b.CallID+`", "skill_group": "support"}`, 201)
	do(ts, admin, "POST", "/v1/metadata", `{"source": "cti", "sip_call_id": "`+a.SIPCallID+`", "call_id": "`+a.CallID+`"}`, 400)
	do(ts, admin, "POST", "/v1/metadata", `{"source": "cti"}`, 400)
	do(ts, admin, "POST", "/v1/metadata", `{"source": "cti", "sip_call_id": "no-such-call"}`, 404)
	do(ts, admin, "POST", "/v1/metadata", `{"source": "cti", "call_id": "`+a.SIPCallID+`"}`, 404) // call_id is Verbatim's id only
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	if err := json.Unmarshal(do(ts, admin, "POST", "/v1/metadata", `{"source": "agent-app", "peripheral_id": "pk-a", "wrap_up_code": "SOLD"}`, 201), &attached); err != nil ||
		len(attached.Attached) != 1 || attached.Attached[0].CallID != a.CallID {
		t.Fatalf("by peripheral id: %+v %v", attached, err)
	}
	do(ts, admin, "POST", "/v1/metadata", `{"source": "agent-app", "peripheral_id": "pk-none"}`, 404)

	// No policy: the supervisor's role defaults, every call.
	if got := found(ts, sup); len(got) != 2 {
		t.Fatalf("supervisor without a policy finds %v", got)
	}
	do(ts, sup, "PUT", "/v1/groups/sales", `{"permissions": ["play"]}`, 403) // only administrators
	do(ts, admin, "PUT", "/v1/groups/sales", `{"permissions": ["listen"]}`, 400)
	do(ts, admin, "PUT", "/v1/groups/sales", `{"permissions": ["play"], "owner": "x"}`, 400)
	do(ts, admin, "PUT", "/v1/groups/sales", `{"all_calls": true, "skill_groups": ["sales"]}`, 400)
	var pol struct {
		Group       string
		Permissions []string
		SkillGroups []string `json:"skill_groups"`
		UpdatedBy   string   `json:"updated_by"`
	}
	if err := json.Unmarshal(do(ts, admin, "PUT", "/v1/groups/sales", `{"permissions": ["play", "comment"], "skill_groups": ["sales"]}`, 200), &pol); err != nil ||
		pol.Group != "sales" || !slices.Equal(pol.Permissions, []string{"play", "comment"}) || pol.UpdatedBy == "" {
		t.Fatalf("policy set: %+v %v", pol, err)
	}
	// In force at once: only the calls of skill group sales, and only
	// what the policy grants.
	if got := found(ts, sup); !slices.Equal(got, []string{a.CallID}) {
		t.Fatalf("supervisor of group sales finds %v, want only %s", got, a.CallID)
	}
	do(ts, sup, "GET", "/v1/calls/"+b.CallID, "", 404)
	do(ts, sup, "GET", "/v1/calls/"+b.CallID+"/recording", "", 404)
	do(ts, sup, "GET", "/v1/calls/"+a.CallID+"/recording", "", 200)
	if body := do(ts, sup, "GET", "/v1/calls/"+a.CallID+"/recording?download=true", "", 403); !strings.Contains(string(body), "permission_denied") ||
		!strings.Contains(string(body), `download`) {
		t.Fatalf("download refusal: %s", body)
	}
	do(ts, sup, "POST", "/v1/exports", `{"call_id": "`+a.CallID+`"}`, 403)
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/comments", `{"text": "policy test"}`, 201)
	evaluation := `{"form": "sales-qa", "criteria": [{"name": "greeting", "score": 4, "max": 5}, {"name": "compliance", "score": 9, "max": 10, "note": "disclosure read"}], "comment": "good call"}`
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/evaluations", evaluation, 403)
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/metadata", `{"source": "agent-app", "scores": {"qa": 1}}`, 403)

	// A grant, then a revocation, each in force at the next request; a
	// server started now reads the policy from the topic.
	do(ts, admin, "PUT", "/v1/groups/sales/permissions/score", "", 200)
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/evaluations", `{"form": "sales-qa", "criteria": [{"name": "greeting", "score": 6, "max": 5}]}`, 400)
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/evaluations", `{"form": "Sales QA", "criteria": [{"name": "greeting", "score": 1, "max": 5}]}`, 400)
	do(ts, sup, "POST", "/v1/calls/"+a.CallID+"/evaluations", evaluation, 201)
	do(ts, sup, "POST", "/v1/calls/"+b.CallID+"/evaluations", evaluation, 404)
	do(ts, admin, "DELETE", "/v1/groups/sales/permissions/play", "", 200)
	do(ts, sup, "GET", "/v1/calls/"+a.CallID+"/recording", "", 403)
	do(ts, admin, "DELETE", "/v1/groups/nobody/permissions/play", "", 404)
	do(ts, admin, "PUT", "/v1/groups/sales/permissions/listen", "", 400)
	second := e.apiServer(0)
	if got := found(second, sup); !slices.Equal(got, []string{a.CallID}) {
		t.Fatalf("a server started later: supervisor finds %v", got)
	}
	do(second, sup, "GET", "/v1/calls/"+a.CallID+"/recording", "", 403)
	var list struct {
		Groups []struct {
			Group       string
			Permissions []string
		}
	}
	if err := json.Unmarshal(do(ts, admin, "GET", "/v1/groups", "", 200), &list); err != nil || len(list.Groups) != 1 ||
		!slices.Equal(list.Groups[0].Permissions, []string{"comment", "score"}) {
		t.Fatalf("groups: %+v %v", list, err)
	}
	do(ts, sup, "GET", "/v1/groups", "", 403)
	do(ts, admin, "DELETE", "/v1/groups/sales", "", 204)
	do(ts, admin, "DELETE", "/v1/groups/sales", "", 404)
	if got := found(second, sup); len(got) != 2 {
		t.Fatalf("after the policy's removal, the supervisor finds %v", got)
	}
	do(second, sup, "GET", "/v1/calls/"+a.CallID+"/recording?download=true", "", 200)

	// The evaluation, projected: each criterion and the total in percent.
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	var detail search.Result
	if err := json.Unmarshal(do(ts, sup, "GET", "/v1/calls/"+a.CallID, "", 200), &detail); err != nil {
		t.Fatal(err)
	}
	evaluated, wrapUp := false, false
	for _, m := range detail.Metadata {
		switch m.Source {
		case "evaluation":
			evaluated = m.Scores["evaluation.sales-qa.greeting"] == 4 && m.Scores["evaluation.sales-qa.compliance"] == 9 &&
				m.Scores["evaluation.sales-qa"] == 86.7 && slices.Equal(m.Comments, []string{"good call", "compliance: disclosure read"}) &&
				m.Variables["evaluator"] != ""
		case "agent-app":
			wrapUp = m.WrapUpCode == "SOLD"
		}
	}
	if !evaluated || !wrapUp {
		t.Fatalf("evaluation %v, wrap-up by peripheral id %v: %+v", evaluated, wrapUp, detail.Metadata)
	}

	// Every policy change, audited with its group.
	changes := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.HasPrefix(ev.GetAction(), "group.") && ev.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS && ev.GetTarget().GetType() == "group" {
			return ev.GetAction() + " " + ev.GetTarget().GetId()
		}
		return ""
	})
	want := map[string]int{"group.set sales": 1, "group.grant sales": 1, "group.revoke sales": 1, "group.remove sales": 1}
	for k, n := range want {
		if changes[k] != n {
			t.Errorf("audit: %d of %q, want %d (%v)", changes[k], k, n, changes)
		}
	}
}
