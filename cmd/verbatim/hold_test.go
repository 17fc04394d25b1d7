package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestLegalHoldAndExpiry: three calls kept 15 s (object lock), one of
// them carol's, on which an administrator places a legal hold by party.
// Before the 15 s nothing deletes any of them, not the store itself; once
// they pass, a dry run counts 2 to erase and 1 held and deletes nothing;
// the expiry erases the 2 and keeps carol's, which the store refuses to
// delete (legal hold). Her hold's release asked and approved by the same
// administrator is refused, and the hold stays in force; approved by a
// second, the next expiry erases her call. A fourth call, kept ten
// years, is deleted early by two administrators: its keys are shredded
// and its rows gone at once, its objects stay locked as ciphertext. Every
// step is on the audit topic.
func TestLegalHoldAndExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "hold")
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, partyCapture(t, "short", "carol", "dave", "erin")))
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet",
		"--retention", "demo=15s"))
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, partyCapture(t, "long", "frank")))
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet",
		"--retention", "demo=3650d"))
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))
	carol, frank := e.find("--party", "sip:carol@example.com"), e.find("--party", "sip:frank@example.com")
	if len(carol) != 1 || len(frank) != 1 || len(e.find()) != 4 {
		t.Fatalf("recorded: %d of carol's, %d of frank's", len(carol), len(frank))
	}
	carolObj := carol[0].Recording.ObjectKey
	var shortUntil time.Time
	for _, c := range e.find() {
		if c.CallID != frank[0].CallID && c.Recording.RetainUntil.After(shortUntil) {
			shortUntil = c.Recording.RetainUntil
		}
	}
	if shortUntil.IsZero() || shortUntil.After(time.Now().Add(time.Minute)) || frank[0].Recording.RetainUntil.Before(time.Now().Add(3649*24*time.Hour)) {
		t.Fatalf("locks: %v for the short calls, %v for frank's", shortUntil, frank[0].Recording.RetainUntil)
	}
	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}

	ts := e.apiServer(0)
	admin, admin2 := stacktest.DexToken(t, "admin@demo.example"), stacktest.DexToken(t, "admin2@demo.example")
	do := func(tok, method, path, body string, want int) []byte {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, rd)
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
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, out, want)
		}
		return out
	}
	var hold struct {
		HoldID  string   `json:"hold_id"`
		State   string   `json:"state"`
		CallIDs []string `json:"call_ids"`
	}
	if err := json.Unmarshal(do(admin, "POST", "/v1/holds", `{"label": "case-42", "reason": "litigation", "party": "sip:carol@example.com"}`, 201), &hold); err != nil ||
		len(hold.CallIDs) != 1 || hold.CallIDs[0] != carol[0].CallID || hold.State != "HOLD_STATE_PLACED" {
		t.Fatalf("hold: %+v %v", hold, err)
	}
	if st, err := store.Stat(ctx, carolObj); err != nil || !st.LegalHold {
		t.Fatalf("carol's recording: %+v %v, want its legal hold set", st, err)
	}

	lf := func(args ...string) []string {
		return append(args, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db)
	}
	// Inside the retention: nothing is due, and the store refuses.
	if out := e.cmd(lf("expire", "--dry-run")...); !strings.HasPrefix(out, "tenant demo: 0 calls past their retention") {
		t.Fatalf("expire before the locks end: %s", out)
	}
	if err := store.Delete(ctx, e.find("--party", "sip:dave@example.com")[0].Recording.ObjectKey); !errors.Is(err, objstore.ErrRetained) {
		t.Fatalf("deleting a locked recording: %v, want ErrRetained", err)
	}
	// Waiting for the locks' end, a known instant.
	for time.Now().Before(shortUntil) {
		time.Sleep(time.Until(shortUntil))
	}
	out := e.cmd(lf("expire", "--dry-run")...)
	if !strings.HasPrefix(out, "tenant demo: 3 calls past their retention: 2 would be erased (dry run: nothing deleted) (4 objects), 1 kept by a legal hold") {
		t.Fatalf("dry run: %s", out)
	}
	if len(e.find()) != 4 {
		t.Fatal("the dry run deleted")
	}
	out = e.cmd(lf("expire")...)
	t.Log(out)
	if !strings.HasPrefix(out, "tenant demo: 3 calls past their retention: 2 erased (4 objects), 1 kept by a legal hold") {
		t.Fatalf("expire: %s", out)
	}
	left := e.find()
	if len(left) != 2 || !((left[0].CallID == carol[0].CallID) != (left[1].CallID == carol[0].CallID)) {
		t.Fatalf("after the expiry: %+v", left)
	}
	if err := store.Delete(ctx, carolObj); !errors.Is(err, objstore.ErrHeld) {
		t.Fatalf("deleting the held recording after its retention: %v, want ErrHeld", err)
	}
	wav := filepath.Join(t.TempDir(), "carol.wav")
	e.cmd("play", carol[0].CallID, "-o", wav, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)

	// The release: one administrator alone cannot.
	do(admin, "POST", "/v1/holds/"+hold.HoldID+"/release/approve", "", 409) // not asked yet
	if err := json.Unmarshal(do(admin, "POST", "/v1/holds/"+hold.HoldID+"/release", "", 202), &hold); err != nil || hold.State != "HOLD_STATE_RELEASE_REQUESTED" {
		t.Fatalf("release asked: %+v %v", hold, err)
	}
	if body := do(admin, "POST", "/v1/holds/"+hold.HoldID+"/release/approve", "", 403); !strings.Contains(string(body), "second_administrator_required") {
		t.Fatalf("approved by the one who asked: %s", body)
	}
	if out := e.cmd(lf("expire")...); !strings.HasPrefix(out, "tenant demo: 1 calls past their retention: 0 erased (0 objects), 1 kept by a legal hold") {
		t.Fatalf("expire with the release only asked: %s", out)
	}
	if err := json.Unmarshal(do(admin2, "POST", "/v1/holds/"+hold.HoldID+"/release/approve", "", 200), &hold); err != nil || hold.State != "HOLD_STATE_RELEASED" {
		t.Fatalf("released: %+v %v", hold, err)
	}
	if st, err := store.Stat(ctx, carolObj); err != nil || st.LegalHold {
		t.Fatalf("carol's recording after the release: %+v %v", st, err)
	}
	if out := e.cmd(lf("expire")...); !strings.HasPrefix(out, "tenant demo: 1 calls past their retention: 1 erased (2 objects), 0 kept") {
		t.Fatalf("expire after the release: %s", out)
	}
	if _, err := store.Stat(ctx, carolObj); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("carol's recording after the expiry: %v", err)
	}

	// Early deletion of frank's call, ten years locked.
	var del struct {
		DeletionID string `json:"deletion_id"`
		Outcomes   []struct {
			Kind           string   `json:"kind"`
			ShreddedKeyIDs []string `json:"shredded_key_ids"`
			LockedObjects  []string `json:"locked_objects"`
		}
	}
	if err := json.Unmarshal(do(admin, "POST", "/v1/deletions", `{"call_ids": ["`+frank[0].CallID+`"], "reason": "Art. 17(1)(d): recorded unlawfully"}`, 202), &del); err != nil {
		t.Fatal(err)
	}
	do(admin, "POST", "/v1/deletions/"+del.DeletionID+"/approve", "", 403)
	if len(e.find("--party", "sip:frank@example.com")) != 1 {
		t.Fatal("frank's call was deleted by one administrator")
	}
	if err := json.Unmarshal(do(admin2, "POST", "/v1/deletions/"+del.DeletionID+"/approve", "", 200), &del); err != nil || len(del.Outcomes) != 1 ||
		del.Outcomes[0].Kind != "CALL_OUTCOME_KIND_ERASED" || len(del.Outcomes[0].ShreddedKeyIDs) != 2 || len(del.Outcomes[0].LockedObjects) != 2 {
		t.Fatalf("early deletion: %+v %v", del, err)
	}
	if len(e.find("--party", "sip:frank@example.com")) != 0 {
		t.Fatal("search still finds frank's call")
	}
	if out, err := runOut(ctx, "play", frank[0].CallID, "-o", filepath.Join(t.TempDir(), "f.wav"), "--database", e.db, "--brokers", e.brokers,
		"--keyring", e.keyring, "--objects", e.objects); err == nil {
		t.Fatalf("frank's call still plays: %s", out)
	}
	if st, err := store.Stat(ctx, frank[0].Recording.ObjectKey); err != nil || st.RetainUntil.Before(time.Now().Add(3649*24*time.Hour)) {
		t.Fatalf("frank's recording is kept locked as ciphertext: %+v %v", st, err)
	}
	if err := store.Delete(ctx, frank[0].Recording.ObjectKey); !errors.Is(err, objstore.ErrRetained) {
		t.Fatalf("deleting frank's locked recording: %v", err)
	}

	// The audit trail.
	got := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.Contains("hold.place hold.release_request hold.release deletion.request deletion.approve retention.expire call.erase", ev.GetAction()) && ev.GetAction() != "" {
			return fmt.Sprintf("%s %s", ev.GetAction(), strings.TrimPrefix(ev.GetResult().String(), "AUDIT_RESULT_"))
		}
		return ""
	})
	// Refusals are audited twice: the lifecycle's decision and the
	// API's request.
	want := map[string]int{"hold.place SUCCESS": 1, "hold.release_request SUCCESS": 1, "hold.release DENIED": 3, "hold.release SUCCESS": 1,
		"deletion.request SUCCESS": 1, "deletion.approve DENIED": 2, "deletion.approve SUCCESS": 1, "retention.expire SUCCESS": 3, "call.erase SUCCESS": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audited %v, want %v", got, want)
	}
	_ = os.Remove(wav)
}
