package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"golang.org/x/mod/sumdb/note"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
)

// TestAuditCommands: the G.711 capture recorded (the processor audits
// each recording stored, with its digests), `verbatim project audit`
// appends the audit topic and signs checkpoints; `audit verify` finds the
// log intact; `audit prove-recording` gives a proof that `audit check`
// verifies offline with only the verifier key, naming the recording and
// its ciphertext SHA-256, which is the stored object's; a recording
// played is audited, appended, and the earlier checkpoint is proved a
// prefix of the later one.
func TestAuditCommands(t *testing.T) {
	e, ctx := g711Env(t, "auditcli", 3*time.Minute)
	common := []string{"--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db}
	out := e.cmd(append([]string{"project", "audit", "--exit-when-idle"}, common...)...)
	t.Log(out)
	// The capture started and stopped, and its two recordings stored: one
	// tenant's log, one checkpoint.
	if !strings.Contains(out, "4 events appended to the logs of 1 tenants, 1 checkpoints") {
		t.Fatalf("project audit: %s", out)
	}
	verify, err := runOut(ctx, append([]string{"audit", "verify", "--tenant", "demo"}, common...)...)
	if err != nil || !strings.Contains(verify, "is intact") || !strings.Contains(verify, "every entry is under a signed checkpoint") {
		t.Fatalf("verify: %v\n%s", err, verify)
	}
	var all []auditlog.Report
	if err := json.Unmarshal([]byte(e.cmd(append([]string{"audit", "verify", "--all-tenants"}, common...)...)), &all); err != nil || len(all) != 1 || all[0].Tenant != "demo" || !all[0].OK() {
		t.Fatalf("verify --all-tenants: %+v %v", all, err)
	}
	// The capture, started and stopped by the operator, and the
	// recordings stored, found by action; exported.
	var captures []auditlog.Entry
	if err := json.Unmarshal([]byte(e.cmd(append([]string{"audit", "search", "--tenant", "demo", "--action", "capture.stopped", "--format", "json"}, common...)...)), &captures); err != nil ||
		len(captures) != 1 || captures[0].TargetID != "pcap:wireshark_sip-rtp-g711.pcap" || captures[0].Reason != "2 calls, 839 RTP packets" || captures[0].ActorRole != "operator" {
		t.Fatalf("capture.stopped: %+v %v", captures, err)
	}
	if table := e.cmd(append([]string{"audit", "search", "--tenant", "demo"}, common...)...); strings.Count(table, "recording.stored") != 2 || !strings.Contains(table, "capture.started") {
		t.Fatalf("audit search:\n%s", table)
	}
	csvPath := filepath.Join(t.TempDir(), "audit.csv")
	e.cmd(append([]string{"audit", "search", "--tenant", "demo", "--format", "csv", "-o", csvPath}, common...)...)
	if b, err := os.ReadFile(csvPath); err != nil || strings.Count(string(b), "\n") != 5 { // a header, 2 capture events, 2 recordings
		t.Fatalf("CSV export: %v\n%s", err, b)
	}
	if _, err := runOut(ctx, append([]string{"audit", "search", "--tenant", "demo", "--format", "xlsx"}, common...)...); err == nil {
		t.Fatal("an XLSX export to the terminal was not refused")
	}
	calls := e.find()
	call := calls[0]
	proofJSON := e.cmd(append([]string{"audit", "prove-recording", "--tenant", "demo", call.CallID}, common...)...)
	var proof struct {
		TreeSize  int64          `json:"tree_size"`
		Recording map[string]any `json:"recording"`
	}
	if err := json.Unmarshal([]byte(proofJSON), &proof); err != nil || proof.Recording == nil {
		t.Fatalf("prove-recording: %v\n%s", err, proofJSON)
	}
	path := filepath.Join(t.TempDir(), "proof.json")
	if err := os.WriteFile(path, []byte(proofJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(e.cmd(append([]string{"audit", "key"}, common...)...))
	checked, err := runOut(ctx, "audit", "check", "--key", vkey, path)
	if err != nil || !strings.Contains(checked, "proof checked") || !strings.Contains(checked, call.CallID) {
		t.Fatalf("check: %v\n%s", err, checked)
	}
	// The digest the log vouches for is the stored object's.
	sealed, err := os.ReadFile(filepath.Join(e.objects, filepath.FromSlash(call.Recording.ObjectKey)))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(sealed)
	if !strings.Contains(checked, "ciphertext SHA-256 "+hex.EncodeToString(sum[:])) {
		t.Fatalf("the proof's ciphertext digest is not the stored object's (%x):\n%s", sum, checked)
	}
	// A proof altered by one byte of its leaf is refused.
	var raw map[string]any
	_ = json.Unmarshal([]byte(proofJSON), &raw)
	raw["index"] = raw["index"].(float64) + 1
	bad, _ := json.Marshal(raw)
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runOut(ctx, "audit", "check", "--key", vkey, path); err == nil {
		t.Fatalf("an altered proof was accepted:\n%s", out)
	}

	// A playback, audited, appended: the old log is a prefix of the new.
	e.cmd("play", call.CallID, "-o", filepath.Join(t.TempDir(), "x.wav"), "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	e.cmd(append([]string{"project", "audit", "--exit-when-idle"}, common...)...)
	var report struct {
		Entries    int64 `json:"entries"`
		LatestSize int64 `json:"latest_checkpoint_size"`
	}
	if err := json.Unmarshal([]byte(e.cmd(append([]string{"audit", "verify", "--tenant", "demo"}, common...)...)), &report); err != nil ||
		report.LatestSize != proof.TreeSize+1 {
		t.Fatalf("after the playback: %+v %v (was %d)", report, err, proof.TreeSize)
	}
	cons := e.cmd(append([]string{"audit", "consistency", "--tenant", "demo", strconv.FormatInt(proof.TreeSize, 10), strconv.FormatInt(report.LatestSize, 10)}, common...)...)
	if err := os.WriteFile(path, []byte(cons), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runOut(ctx, "audit", "check", "--key", vkey, path); err != nil || !strings.Contains(out, "is a prefix") {
		t.Fatalf("consistency check: %v\n%s", err, out)
	}
}

// TestAuditAPI: after a supervisor plays a call through the API and the
// audit log is projected, an auditor finds who listened to the call, and
// the recording stored for it, exports the entries as CSV and XLSX (the
// same rows), and gets a proof of the call's recording that checks with
// the verifier key the API gives; nobody else reads the log.
func TestAuditAPI(t *testing.T) {
	e, ctx := g711Env(t, "auditapi", 3*time.Minute)
	ts := e.apiServer(0)
	call := e.find()[0]
	sup, auditor := stacktest.DexToken(t, "supervisor@demo.example"), stacktest.DexToken(t, "auditor@demo.example")
	get := func(tok, path string, want int) []byte {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
		return b
	}
	get(sup, "/v1/calls/"+call.CallID+"/recording", 200)
	// The right of access: an administrator's report of a subject's calls.
	admin := stacktest.DexToken(t, "admin@demo.example")
	report := string(get(admin, "/v1/subjects/report?party="+url.QueryEscape("sip:sipp@10.0.2.20:5060"), 200))
	if strings.Count(report, `<h2 class="call">`) != 2 || !strings.Contains(report, call.CallID) || !strings.Contains(report, "Calls of sip:sipp@10.0.2.20:5060") {
		t.Fatalf("the subject report: %s", report)
	}
	if r := string(get(admin, "/v1/subjects/report?party="+url.QueryEscape("<script>x</script>"), 200)); strings.Contains(r, "<script>") || strings.Contains(r, `<h2 class="call">`) {
		t.Fatalf("a report of a party nobody is: %s", r)
	}
	get(sup, "/v1/subjects/report?party=1001", 403)
	var me struct{ Subject string }
	_ = json.Unmarshal(get(sup, "/v1/me", 200), &me)
	e.cmd("project", "audit", "--exit-when-idle", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db)

	var page struct {
		Entries []struct {
			Index        int64  `json:"index"`
			Action       string `json:"action"`
			ActorSubject string `json:"actor_subject"`
			CallID       string `json:"call_id"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(get(auditor, "/v1/audit?call_id="+call.CallID, 200), &page); err != nil {
		t.Fatal(err)
	}
	var listened, stored bool
	for _, en := range page.Entries {
		listened = listened || en.Action == "recording.play" && en.ActorSubject == me.Subject
		stored = stored || en.Action == "recording.stored" && en.ActorSubject == "verbatim-process"
	}
	if !listened || !stored {
		t.Fatalf("the call's audit entries: %+v (want the supervisor's playback and the recording stored)", page.Entries)
	}
	csvBody := get(auditor, "/v1/audit?call_id="+call.CallID+"&format=csv", 200)
	rows, err := csv.NewReader(bytes.NewReader(csvBody)).ReadAll()
	if err != nil || len(rows) != len(page.Entries)+1 || rows[0][0] != "index" {
		t.Fatalf("CSV: %d rows, %v (want %d and a header)", len(rows), err, len(page.Entries)+1)
	}
	book, err := excelize.OpenReader(bytes.NewReader(get(auditor, "/v1/audit?call_id="+call.CallID+"&format=xlsx", 200)))
	if err != nil {
		t.Fatal(err)
	}
	sheet, err := book.GetRows("Sheet1")
	if err != nil || len(sheet) != len(rows) || sheet[1][3] != rows[1][3] {
		t.Fatalf("XLSX: %d rows, %v; CSV %d", len(sheet), err, len(rows))
	}
	var proofs struct {
		Proofs      []auditlog.InclusionProof `json:"proofs"`
		VerifierKey string                    `json:"verifier_key"`
	}
	if err := json.Unmarshal(get(auditor, "/v1/audit/proof?call_id="+call.CallID, 200), &proofs); err != nil || len(proofs.Proofs) != 1 {
		t.Fatalf("proof: %v %+v", err, proofs)
	}
	v, err := note.NewVerifier(proofs.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := auditlog.CheckInclusion(proofs.Proofs[0], v); err != nil {
		t.Fatalf("the API's proof: %v", err)
	}
	get(auditor, "/v1/audit/checkpoint", 200)
	get(auditor, "/v1/audit?result=MAYBE", 400)
	get(auditor, "/v1/audit/proof", 400)
	get(sup, "/v1/audit", 403)
	get(admin, "/v1/audit", 403)
	var reports struct {
		Entries []auditlog.Entry `json:"entries"`
	}
	if err := json.Unmarshal(get(auditor, "/v1/audit?action=subject.report&result=SUCCESS", 200), &reports); err != nil || len(reports.Entries) != 2 ||
		reports.Entries[0].TargetType != "subject" || reports.Entries[0].TargetID != "sip:sipp@10.0.2.20:5060" {
		t.Fatalf("the subject reports, audited: %+v %v", reports.Entries, err)
	}
}
