package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/ops"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestOpsEndpoint: `process` and `project search`, run as services with
// --ops-addr, serve /healthz, /readyz (Kafka, and ClickHouse for the
// projection, answering) and /metrics, where the recordings stored and
// the records projected reach what the capture holds, beside their Kafka
// clients' metrics; a non-loopback address is refused without
// --ops-remote.
func TestOpsEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "ops")
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, partyCapture(t, "ops", "carol", "dave"))
	if _, err := runOut(ctx, "process", "--brokers", e.brokers, "--ops-addr", "0.0.0.0:0", "--exit-when-idle"); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("a remote ops address: %v", err)
	}
	// serve runs a role until the test ends and returns the first group
	// of each pattern as its stderr says it: its endpoint first.
	serve := func(patterns []string, args ...string) []string {
		t.Helper()
		rctx, stop := context.WithCancel(ctx)
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() { // ends when rctx does
			done <- run(rctx, append(args, "--ops-addr", "127.0.0.1:0"), io.Discard, pw)
			pw.Close()
		}()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", args[0], err)
			}
		})
		res := []*regexp.Regexp{regexp.MustCompile(`operations endpoint on (http://\S+)`)}
		for _, p := range patterns {
			res = append(res, regexp.MustCompile(p))
		}
		found := make(chan []string, 1)
		go func() { // reads the role's stderr to its end
			got := make([]string, len(res))
			n := 0
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				for i, re := range res {
					if m := re.FindStringSubmatch(sc.Text()); m != nil && got[i] == "" {
						got[i], n = m[1], n+1
						if n == len(res) {
							found <- got
						}
					}
				}
			}
			close(found)
		}()
		select {
		case got, ok := <-found:
			if !ok {
				t.Fatalf("%s ended before saying where it serves: %v", args[0], <-done)
			}
			return got
		case <-ctx.Done():
			t.Fatalf("%s: no endpoint", args[0])
		}
		return nil
	}
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	proc := serve(nil, "process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--quiet")[0]
	body := awaitMetrics(ctx, t, proc, "verbatim_process_recordings_stored_total 2")
	for _, want := range []string{"verbatim_process_open_calls 0", "verbatim_process_recordings_failed_total 0", `verbatim_build_info{revision=`, `client="verbatim-process#`} {
		if !strings.Contains(body, want) {
			t.Fatalf("process metrics lack %q:\n%s", want, body)
		}
	}
	if !regexp.MustCompile(`verbatim_kafka_\w+\{[^}]*client="verbatim-process#`).MatchString(body) {
		t.Fatalf("no Kafka client metrics:\n%s", body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, b := get(proc + p); code != 200 {
			t.Fatalf("process %s: %d %s", p, code, b)
		}
	}
	proj := serve(nil, "project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db)[0]
	// The lag is the brokers' word at the scrape: 0 once every record
	// written before is projected (and its offset committed).
	if b := awaitMetrics(ctx, t, proj, "verbatim_project_lag_records 0"); !strings.Contains(b, "\nverbatim_project_records_total ") || !strings.Contains(b, `client="verbatim-project-search#`) {
		t.Fatalf("project metrics:\n%s", b)
	}
	if code, b := get(proj + "/readyz"); code != 200 {
		t.Fatalf("project readyz: %d %s", code, b)
	}
	if rs := e.find(); len(rs) != 2 {
		t.Fatalf("the served projection has %d calls, want 2", len(rs))
	}

	// The API counts its requests by operation and status, refused ones
	// too.
	got := serve([]string{`api: listening on (https://\S+)`}, "api", "--listen", "127.0.0.1:0", "--brokers", e.brokers, "--keyring", e.keyring,
		"--objects", e.objects, "--database", e.db, "--spool", t.TempDir())
	opsURL, apiURL := got[0], got[1]
	client := stacktest.TLSClient(t)
	for _, tok := range []string{stacktest.DexToken(t, "supervisor@demo.example"), "not-a-token"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", apiURL+"/v1/calls", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	b := awaitMetrics(ctx, t, opsURL, `verbatim_api_requests_total{code="200",operation="call.search"} 1`)
	for _, want := range []string{`verbatim_api_requests_total{code="401",operation="call.search"} 1`, `verbatim_api_request_seconds_count{operation="call.search"} 2`,
		`client="verbatim-api#`} {
		if !strings.Contains(b, want) {
			t.Fatalf("api metrics lack %q:\n%s", want, b)
		}
	}
	if code, b := get(opsURL + "/readyz"); code != 200 {
		t.Fatalf("api readyz: %d %s", code, b)
	}

	// Every metric the Grafana dashboard queries is one a role exports:
	// those scraped here, and the SIPREC server's and live capture's.
	others := ops.New("others", "test")
	var srs atomic.Pointer[ingest.SRSStats]
	srs.Store(&ingest.SRSStats{})
	var live atomic.Pointer[ingest.Report]
	live.Store(&ingest.Report{})
	siprecMetrics(others, &srs)
	ingestMetrics(others, &live)
	rec := httptest.NewRecorder()
	others.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	_, procBody := get(proc + "/metrics")
	_, projBody := get(proj + "/metrics")
	exported := procBody + projBody + b + rec.Body.String()
	dash, err := os.ReadFile("../../deploy/grafana/verbatim-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dash, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("the dashboard: %v", err)
	}
	names := regexp.MustCompile(`\b(?:verbatim|process|go)_[a-z_]+\b`)
	checked := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, n := range names.FindAllString(tg.Expr, -1) {
				if !regexp.MustCompile(`\n` + n + `[{ ]`).MatchString(exported) {
					t.Errorf("panel %q queries %s, which no role exports", p.Title, n)
				}
				checked++
			}
		}
	}
	t.Logf("the dashboard's %d panels query %d metrics, each exported", len(d.Panels), checked)
}
