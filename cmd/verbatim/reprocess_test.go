//go:build bcg729 && cgo

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"context"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// TestReprocessG729DecodedByALaterBuild is the acceptance test of
// `verbatim reprocess`: a G.729 call recorded by the Apache-2.0-only build
// (no libbcg729: the stream kept raw, silent in the WAV, the call
// "partial") is reprocessed by this build. The new recording holds the
// callee's audio where tshark's export of its RTP, decoded by ffmpeg, has
// it; search shows it as the call's recording and, on request, the one it
// superseded; the completeness report shows both.
func TestReprocessG729DecodedByALaterBuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "reprocess")
	capture := stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g729a.pcap")

	// The earlier build: this module without -tags bcg729.
	apache := filepath.Join(t.TempDir(), "verbatim-apache")
	build := exec.CommandContext(ctx, "go", "build", "-o", apache, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build (without bcg729): %v\n%s", err, out)
	}
	old := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, apache, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("verbatim-apache %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("verbatim-apache %s:\n%s", args[0], out)
	}
	old("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, capture)
	old("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet")
	project := func() {
		t.Helper()
		e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	}
	project()
	rs := e.find("--call-id", "1-24411@10.0.2.20")
	if len(rs) != 1 || rs[0].Recording == nil || rs[0].Recording.Completeness == nil || rs[0].Recording.Completeness.Status != schemas.StatusPartial {
		t.Fatalf("recorded by the build without G.729: %+v", rs)
	}
	first := rs[0].Recording

	args := []string{"reprocess", "--job", "g729-decoded", "--codec", "G729", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects}
	plan := e.cmd(append(args, "--dry-run")...)
	t.Log("dry run:\n" + plan)
	if !strings.Contains(plan, "reprocessed: g729 decoded (stream callee-audio)") || !strings.Contains(plan, "would redo 1 ") {
		t.Fatalf("the dry run does not say it would decode G.729:\n%s", plan)
	}
	out := e.cmd(append(args, "--reason", "libbcg729 build")...)
	t.Log(out)
	if !strings.Contains(out, "redid 1 ") {
		t.Fatalf("reprocess:\n%s", out)
	}
	project()
	text := e.cmd("search", "--database", e.db, "--call-id", "1-24411@10.0.2.20", "--history")
	t.Log("\n" + text)
	if !strings.Contains(text, "supersedes "+first.RecordingID+": reprocessed: g729 decoded (stream callee-audio) (libbcg729 build)") ||
		!strings.Contains(text, "earlier recording "+first.RecordingID) {
		t.Fatalf("search does not show the supersession and the earlier recording:\n%s", text)
	}
	rs = e.find("--call-id", "1-24411@10.0.2.20", "--history")
	rec := rs[0].Recording
	if rec.Generation != 1 || rec.Supersedes != first.RecordingID || rec.Completeness == nil || rec.Completeness.Status != schemas.StatusComplete ||
		len(rs[0].History) != 1 || rs[0].History[0].RecordingID != first.RecordingID || rs[0].History[0].Completeness.Status != schemas.StatusPartial {
		t.Fatalf("after reprocessing: %+v, history %+v", rec, rs[0].History)
	}

	// What a listener hears: the callee's channel against ffmpeg's decode
	// of tshark's export (two G.729 decoders agree to about 24 dB).
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	e.cmd("play", rs[0].CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	wav, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	left, right := wavChannels(t, wav)
	want, _ := tsharkRef(t, capture, 0x044559a1, 18, "g729")
	best, at, off := snrMatch(right, want)
	t.Logf("callee channel against ffmpeg's G.729 decode: %.1f dB SNR from sample %d (%.1f dB a frame off)", best, at, off)
	if best < 15 || off > 5 || !silent(left) {
		t.Fatalf("the reprocessed recording does not hold the callee's G.729 audio (%.1f dB, %.1f a frame off), or the caller's channel has sound", best, off)
	}

	// The earlier recording stays playable as it was: without the G.729.
	oldPath := filepath.Join(t.TempDir(), "earlier.wav")
	e.cmd("play", rs[0].CallID, "--recording", first.RecordingID, "-o", oldPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	oldWAV, err := os.ReadFile(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	if l, r := wavChannels(t, oldWAV); !silent(l) || !silent(r) {
		t.Fatal("the earlier recording has sound: it is not the one the build without G.729 made")
	}

	var days []search.PartyDay
	rep := e.cmd("completeness", "--database", e.db, "--from", "2000-01-01", "--to", "2100-01-01", "--json")
	if err := json.Unmarshal([]byte(rep), &days); err != nil {
		t.Fatal(err)
	}
	for _, d := range days {
		if d.Complete != 1 || d.Reprocessed != 1 || d.Superseded[schemas.StatusPartial] != 1 {
			t.Fatalf("completeness report: %+v", d)
		}
	}
	if len(days) == 0 {
		t.Fatal("no completeness report")
	}
	t.Log("\n" + e.cmd("completeness", "--database", e.db, "--from", "2000-01-01", "--to", "2100-01-01"))
}
