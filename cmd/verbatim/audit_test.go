package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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
	if !strings.Contains(out, "2 checkpoints") && !strings.Contains(out, "1 checkpoints") {
		t.Fatalf("project audit: %s", out)
	}
	verify, err := runOut(ctx, append([]string{"audit", "verify", "--tenant", "demo"}, common...)...)
	if err != nil || !strings.Contains(verify, "is intact") {
		t.Fatalf("verify: %v\n%s", err, verify)
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
