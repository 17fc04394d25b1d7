package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// g711Env is a cliEnv named name with the two calls of the G.711 capture
// recorded and projected, and a context that ends after timeout.
func g711Env(t *testing.T, name string, timeout time.Duration) (*cliEnv, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	e := newCLIEnv(ctx, t, name)
	e.record(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	return e, ctx
}

// startAPI runs `verbatim api` in e, on a port of its own, and returns its
// base URL once it says it listens.
func (e *cliEnv) startAPI(extra ...string) string {
	t := e.t
	t.Helper()
	listen := "127.0.0.1:0"
	if len(extra) > 1 && extra[0] == "--listen" {
		listen, extra = extra[1], extra[2:]
	}
	ctx, cancel := context.WithCancel(e.ctx)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { // joined by the cleanup below
		done <- run(ctx, append([]string{"api", "--listen", listen, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects,
			"--database", e.db, "--spool", t.TempDir()}, extra...), io.Discard, pw)
		pw.Close()
	}()
	var exited error // set once the scan below ends early: run returned
	started := false
	t.Cleanup(func() {
		cancel()
		if started {
			exited = <-done
		}
		if exited != nil {
			t.Errorf("api: %v", exited)
		}
	})
	listening := regexp.MustCompile(`api: listening on (https://\S+)`)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		t.Log(sc.Text())
		if m := listening.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, pr) }() // the rest of its log
			started = true
			return m[1]
		}
	}
	exited = <-done
	t.Fatalf("api did not start: %v", exited)
	return ""
}

// TestAPI: real tokens from the local stack's Dex against `verbatim api`
// over HTTPS. A demo supervisor finds the two calls of the G.711 capture,
// reads one, and plays its recording: the bytes `verbatim play` writes,
// and the right slice of them for a Range request. Another tenant's
// supervisor, a user whose party is in neither call, an auditor, no token
// and a bad one each get what their rights say, and every request, refused
// ones too, is on the audit topic.
func TestAPI(t *testing.T) {
	e, ctx := g711Env(t, "api", 3*time.Minute)
	base := e.startAPI()
	client := stacktest.TLSClient(t)
	sup := stacktest.DexToken(t, "supervisor@demo.example")
	tokens := map[string]string{"demo supervisor": sup, "acme supervisor": stacktest.DexToken(t, "supervisor@acme.example"),
		"demo user": stacktest.DexToken(t, "user@demo.example"), "demo auditor": stacktest.DexToken(t, "auditor@demo.example"),
		"no token": "", "bad token": sup[:len(sup)-4] + "AAAA"}
	requests := 0
	do := func(who, path string, hdr ...string) (int, []byte, http.Header) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok := tokens[who]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		requests++
		return resp.StatusCode, b, resp.Header
	}
	expect := func(who, path string, want int) []byte {
		t.Helper()
		got, body, _ := do(who, path)
		if got != want {
			t.Fatalf("%s GET %s: %d %s, want %d", who, path, got, body, want)
		}
		if want >= 400 {
			var e struct {
				Error struct{ Code, Message string }
			}
			if json.Unmarshal(body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s GET %s: %d without a JSON error: %s", who, path, got, body)
			}
		}
		return body
	}

	var doc map[string]any
	if err := json.Unmarshal(expect("no token", "/openapi.json", 200), &doc); err != nil || doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi.json: %v %v", err, doc["openapi"])
	}
	var me struct{ Tenant string }
	if json.Unmarshal(expect("demo supervisor", "/v1/me", 200), &me); me.Tenant != "demo" {
		t.Fatalf("me: %+v", me)
	}
	type page struct {
		Calls      []search.Result `json:"calls"`
		NextCursor string          `json:"next_cursor"`
	}
	var p page
	if err := json.Unmarshal(expect("demo supervisor", "/v1/calls", 200), &p); err != nil || len(p.Calls) != 2 {
		t.Fatalf("supervisor's calls: %v, %d", err, len(p.Calls))
	}
	call := p.Calls[0]
	for who, n := range map[string]int{"acme supervisor": 0, "demo user": 0} {
		var q page
		if err := json.Unmarshal(expect(who, "/v1/calls", 200), &q); err != nil || len(q.Calls) != n {
			t.Fatalf("%s: %v, %d calls, want %d", who, err, len(q.Calls), n)
		}
	}
	// Filters and order: both calls are complete; newest first reverses
	// them; bad values are refused.
	var byStatus, newest page
	if json.Unmarshal(expect("demo supervisor", "/v1/calls?status=complete", 200), &byStatus); len(byStatus.Calls) != 2 {
		t.Fatalf("status=complete: %d calls", len(byStatus.Calls))
	}
	if json.Unmarshal(expect("demo supervisor", "/v1/calls?status=partial", 200), &byStatus); len(byStatus.Calls) != 0 {
		t.Fatalf("status=partial: %d calls", len(byStatus.Calls))
	}
	if json.Unmarshal(expect("demo supervisor", "/v1/calls?sort=-started_at", 200), &newest); len(newest.Calls) != 2 ||
		newest.Calls[0].CallID != p.Calls[1].CallID {
		t.Fatalf("newest first: %+v", newest.Calls)
	}
	expect("demo supervisor", "/v1/calls?status=great", 400)
	expect("demo supervisor", "/v1/calls?sort=duration", 400)
	expect("demo supervisor", "/v1/calls?variable=novalue", 400)
	expect("demo auditor", "/v1/calls", 403)
	expect("no token", "/v1/calls", 401)
	expect("bad token", "/v1/calls", 401)
	expect("demo supervisor", "/v1/calls?limit=5000", 400)
	expect("demo supervisor", "/v1/calls?bogus=1", 400)
	expect("demo supervisor", "/v1/calls?from=yesterday", 400)
	expect("demo supervisor", "/v1/calls?cursor=x", 400)
	expect("demo supervisor", "/v1/nothing", 404)

	var detail search.Result
	if err := json.Unmarshal(expect("demo supervisor", "/v1/calls/"+call.CallID, 200), &detail); err != nil ||
		detail.Recording == nil || len(detail.Recording.Ledgers) == 0 || len(detail.Parties) != 2 {
		t.Fatalf("call detail: %v %+v", err, detail)
	}
	expect("demo supervisor", "/v1/calls/"+call.CallID+"/recording?recording=no-such-recording", 404)
	for _, who := range []string{"acme supervisor", "demo user"} {
		expect(who, "/v1/calls/"+call.CallID, 404)
		expect(who, "/v1/calls/"+call.CallID+"/recording", 404)
	}

	// Playback: what `verbatim play` writes, whole and by range.
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	e.cmd("play", call.CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	want, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	got := expect("demo supervisor", "/v1/calls/"+call.CallID+"/recording", 200)
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed recording: %d bytes, differs from verbatim play's %d", len(got), len(want))
	}
	status, part, hdr := do("demo supervisor", "/v1/calls/"+call.CallID+"/recording", "Range", "bytes=1000-1999")
	if status != http.StatusPartialContent || !bytes.Equal(part, want[1000:2000]) ||
		hdr.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(want)) || hdr.Get("Content-Type") != "audio/wav" {
		t.Fatalf("range: %d, %d bytes, %q %q", status, len(part), hdr.Get("Content-Range"), hdr.Get("Content-Type"))
	}
	status, _, _ = do("demo supervisor", "/v1/calls/"+call.CallID+"/recording", "Range", fmt.Sprintf("bytes=%d-", len(want)+10))
	if status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", status)
	}

	// Metadata in: an agent's application posts the call's data; a retry
	// with the same Idempotency-Key is the same event; bad bodies are
	// refused with the reason and change nothing.
	post := func(who, body, key, contentType string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/calls/"+call.CallID+"/metadata", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokens[who])
		req.Header.Set("Content-Type", contentType)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		requests++
		return resp.StatusCode, b
	}
	good := `{"source": "agent-app", "agent_id": "agent-7", "agent_name": "Ann Agent", "skill_group": "sales", "wrap_up_code": "SOLD",
		"variables": {"account": "12345"}, "scores": {"qa": 0.9}, "comments": ["customer asked for a callback"]}`
	var first, again struct {
		EventID string `json:"event_id"`
	}
	for i, dst := range []*struct {
		EventID string `json:"event_id"`
	}{&first, &again} {
		status, b := post("demo supervisor", good, "crm-4711", "application/json")
		if status != http.StatusCreated || json.Unmarshal(b, dst) != nil || dst.EventID == "" {
			t.Fatalf("metadata post %d: %d %s", i+1, status, b)
		}
	}
	if first.EventID != again.EventID {
		t.Fatalf("a retry with the same Idempotency-Key made another event: %s, %s", first.EventID, again.EventID)
	}
	for _, c := range []struct {
		name, body, key, ct string
		status              int
	}{
		{"malformed JSON", `{"source": "x",`, "k1", "application/json", 400},
		{"unknown field", `{"source": "x", "owner": "mallory"}`, "k2", "application/json", 400},
		{"two objects", `{"source": "x"} {"source": "y"}`, "k3", "application/json", 400},
		{"no source", `{"agent_id": "a"}`, "k4", "application/json", 400},
		{"no Idempotency-Key", good, "", "application/json", 400},
		{"not JSON", good, "k5", "text/plain", 415},
		{"too large", `{"source": "x", "comments": ["` + strings.Repeat("a", 70<<10) + `"]}`, "k6", "application/json", 413},
	} {
		if status, b := post("demo supervisor", c.body, c.key, c.ct); status != c.status || !bytes.Contains(b, []byte(`"code"`)) {
			t.Errorf("%s: %d %s, want %d", c.name, status, b, c.status)
		}
	}
	if status, _ := post("acme supervisor", good, "crm-1", "application/json"); status != http.StatusNotFound {
		t.Errorf("another tenant's metadata post: %d, want 404", status)
	}
	commentReq, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/calls/"+call.CallID+"/comments", strings.NewReader(`{"text": "callback promised"}`))
	if err != nil {
		t.Fatal(err)
	}
	commentReq.Header.Set("Authorization", "Bearer "+sup)
	commentReq.Header.Set("Content-Type", "application/json")
	commentReq.Header.Set("Idempotency-Key", "comment-1")
	if resp, err := client.Do(commentReq); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("comment: %v %v", err, resp)
	} else {
		resp.Body.Close()
		requests++
	}
	for _, c := range []struct {
		body string
		want int
	}{{`{"tags": ["vip", "callback"]}`, 201}, {`{"tags": ["Ann Agent"]}`, 400}, {`{"tags": []}`, 400}} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/calls/"+call.CallID+"/tags", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+sup)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "tags-1")
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != c.want {
			t.Fatalf("tags %s: %v %v, want %d", c.body, err, resp, c.want)
		}
		resp.Body.Close()
		requests++
	}
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	var withMeta search.Result
	if err := json.Unmarshal(expect("demo supervisor", "/v1/calls/"+call.CallID, 200), &withMeta); err != nil {
		t.Fatal(err)
	}
	var mine []search.Metadata
	comments := 0
	for _, m := range withMeta.Metadata {
		switch m.Source {
		case "agent-app":
			mine = append(mine, m)
		case "comment":
			if len(m.Comments) == 1 && m.Comments[0] == "callback promised" && m.Variables["comment_author"] != "" {
				comments++
			}
		}
	}
	if comments != 1 {
		t.Fatalf("the comment is not in the call's metadata with its author: %+v", withMeta.Metadata)
	}
	var tagged page
	if json.Unmarshal(expect("demo supervisor", "/v1/calls?tag=vip", 200), &tagged); len(tagged.Calls) != 1 || tagged.Calls[0].CallID != call.CallID {
		t.Fatalf("by tag: %+v", tagged.Calls)
	}
	var byAgent page
	if json.Unmarshal(expect("demo supervisor", "/v1/calls?agent=agent-7&skill_group=sales&variable=account%3D12345", 200), &byAgent); len(byAgent.Calls) != 1 ||
		byAgent.Calls[0].CallID != call.CallID {
		t.Fatalf("by agent, skill group and variable: %+v", byAgent.Calls)
	}
	if len(mine) != 1 || mine[0].AgentName != "Ann Agent" || mine[0].AgentID != "agent-7" || mine[0].Variables["account"] != "12345" ||
		mine[0].Scores["qa"] != 0.9 || mine[0].WrapUpCode != "SOLD" {
		t.Fatalf("metadata after projection: %+v", mine)
	}

	// Every request above, on the audit topic (openapi.json needs no
	// token and is not audited).
	cl, err := kafkaclient.New(stacktest.KafkaFor(strings.Split(e.brokers, ","), ""), kgo.ConsumeTopics(schemas.TopicAudit),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var events []*verbatimv1.AuditEvent
	stacktest.ReadBack(ctx, t, cl, func(r *kgo.Record) {
		var ev verbatimv1.AuditEvent
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(ev.GetUserAgent(), "Go-http-client") { // this test's requests, not verbatim play's
			events = append(events, &ev)
		}
	}, schemas.TopicAudit)
	if len(events) != requests-1 {
		t.Fatalf("%d audit events for %d audited requests", len(events), requests-1)
	}
	var anonymous, denied, played, attached int
	for _, ev := range events {
		switch {
		case ev.GetActor().GetSubject() == "anonymous" && ev.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_DENIED:
			anonymous++
		case ev.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_DENIED:
			denied++
		case ev.GetAction() == "recording.play" && ev.GetTenant() == "demo" && ev.GetTarget().GetId() == detail.Recording.RecordingID:
			played++
		case ev.GetAction() == "metadata.attach" && ev.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS:
			attached++
		}
	}
	if anonymous != 2 || played != 3 || denied < 20 || attached != 2 {
		t.Fatalf("audit: %d anonymous refusals (want 2), %d plays (want 3), %d metadata posts (want 2), %d other refusals (want at least 20)",
			anonymous, played, attached, denied)
	}
}
