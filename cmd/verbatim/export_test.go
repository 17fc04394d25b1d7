package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas/vcon"
)

// exportJobState is what a client sees of an export.
type exportJobState struct {
	ID       string `json:"export_id"`
	State    string `json:"state"`
	Selected int    `json:"calls_selected"`
	Written  int    `json:"recordings_written"`
	Error    string `json:"error"`
}

// TestExport: a supervisor exports the tenant's calls; the job's progress
// is followed until it is done, and the zip holds each call's recording
// byte for byte as `verbatim play` writes it, its JSON and a manifest
// with the recordings' SHA-256. Another tenant cannot see the export, an
// auditor cannot start one.
func TestExport(t *testing.T) {
	e, ctx := g711Env(t, "export", 2*time.Minute)
	base := e.startAPI()
	client := stacktest.TLSClient(t)
	sup, acme, auditor := stacktest.DexToken(t, "supervisor@demo.example"), stacktest.DexToken(t, "supervisor@acme.example"),
		stacktest.DexToken(t, "auditor@demo.example")
	do := func(tok, method, path, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if status, b := do(auditor, "POST", "/v1/exports", `{}`); status != http.StatusForbidden {
		t.Fatalf("auditor's export: %d %s", status, b)
	}
	if status, b := do(sup, "POST", "/v1/exports", `{"owner": "x"}`); status != http.StatusBadRequest {
		t.Fatalf("export with an unknown field: %d %s", status, b)
	}
	status, b := do(sup, "POST", "/v1/exports", `{"status": "complete"}`)
	var job exportJobState
	if status != http.StatusAccepted || json.Unmarshal(b, &job) != nil || job.ID == "" {
		t.Fatalf("export: %d %s", status, b)
	}
	// Its state, until it is no longer running (the job's own event).
	follow := func(job *exportJobState) {
		t.Helper()
		for job.State == "running" {
			status, b := do(sup, "GET", "/v1/exports/"+job.ID, "")
			if status != 200 || json.Unmarshal(b, job) != nil {
				t.Fatalf("export state: %d %s", status, b)
			}
			select {
			case <-ctx.Done():
				t.Fatalf("export still running: %s", b)
			case <-time.After(50 * time.Millisecond): // the interval of asking, not a wait that decides anything
			}
		}
	}
	follow(&job)
	if job.State != "done" || job.Selected != 2 || job.Written != 2 {
		t.Fatalf("export ended: %+v", job)
	}
	if status, _ := do(acme, "GET", "/v1/exports/"+job.ID, ""); status != http.StatusNotFound {
		t.Fatalf("another tenant sees the export: %d", status)
	}
	if status, _ := do(acme, "GET", "/v1/exports/"+job.ID+"/download", ""); status != http.StatusNotFound {
		t.Fatalf("another tenant downloads the export: %d", status)
	}
	status, zipped := do(sup, "GET", "/v1/exports/"+job.ID+"/download", "")
	if status != 200 {
		t.Fatalf("download: %d", status)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	var manifest struct {
		Recordings []struct{ CallID, File, SHA256 string }
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest.Recordings) != 2 {
		t.Fatalf("manifest: %v %s", err, files["manifest.json"])
	}
	for _, r := range manifest.Recordings {
		wavPath := filepath.Join(t.TempDir(), "call.wav")
		e.cmd("play", r.CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
		want, err := os.ReadFile(wavPath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(files[r.File], want) || files[r.CallID+".json"] == nil {
			t.Fatalf("call %s: the exported recording (%d bytes) is not what verbatim play writes (%d), or its JSON is missing", r.CallID, len(files[r.File]), len(want))
		}
	}
	t.Logf("export %s: %d files, %d bytes", job.ID, len(files), len(zipped))

	// The portability export: each call as a vCon naming its recording.
	if status, b := do(sup, "POST", "/v1/exports", `{"format": "mp3"}`); status != http.StatusBadRequest {
		t.Fatalf("an unknown format: %d %s", status, b)
	}
	status, b = do(sup, "POST", "/v1/exports", `{"format": "vcon"}`)
	job.State = ""
	if status != http.StatusAccepted || json.Unmarshal(b, &job) != nil {
		t.Fatalf("vcon export: %d %s", status, b)
	}
	follow(&job)
	if job.State != "done" || job.Selected != 2 || job.Written != 2 {
		t.Fatalf("vcon export ended: %+v", job)
	}
	_, zipped = do(sup, "GET", "/v1/exports/"+job.ID+"/download", "")
	if zr, err = zip.NewReader(bytes.NewReader(zipped), int64(len(zipped))); err != nil {
		t.Fatal(err)
	}
	vfiles := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		vfiles[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	for _, r := range manifest.Recordings {
		doc := vfiles[r.CallID+".vcon.json"]
		if err := vcon.Validate(doc); err != nil {
			t.Fatalf("call %s: %v\n%s", r.CallID, err, doc)
		}
		var v api.VCon
		if err := json.Unmarshal(doc, &v); err != nil {
			t.Fatal(err)
		}
		d := v.Dialog[0]
		wav := vfiles[d.Filename]
		sum := sha512.Sum512(wav)
		if d.Type != "recording" || !bytes.Equal(wav, files[r.File]) || d.ContentHash != api.ContentHash(sum[:]) || len(v.Parties) < 2 || len(d.Parties) != len(v.Parties) ||
			d.Originator == nil || v.Parties[*d.Originator].Role != "caller" {
			t.Fatalf("call %s: vCon %s; its recording (%d bytes) is not the one verbatim play writes, or its hash or parties are wrong", r.CallID, doc, len(wav))
		}
		if vfiles[r.CallID+".json"] != nil {
			t.Fatalf("call %s: the vcon export holds the search JSON too", r.CallID)
		}
	}
	t.Logf("vcon export %s: %d files, %d bytes", job.ID, len(vfiles), len(zipped))
}
