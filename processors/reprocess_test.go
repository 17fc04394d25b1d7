package processors_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func (p *pipeline) reprocess(ctx context.Context, job string, sel processors.Selection, mod func(*processors.ReprocessConfig)) (processors.ReprocessReport, error) {
	p.t.Helper()
	cfg := processors.ReprocessConfig{Kafka: p.kafka(), Job: job, Select: sel, Keys: p.km, Store: p.store, SpoolDir: p.t.TempDir(), Actor: "test"}
	if mod != nil {
		mod(&cfg)
	}
	return processors.Reprocess(ctx, cfg)
}

// objectCount counts the objects in kfakePipeline's store.
func (p *pipeline) objectCount() int {
	p.t.Helper()
	n := 0
	err := filepath.WalkDir(p.objects, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(path, ".meta.json") {
			n++
		}
		return err
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}

// audits returns the tenant's audit events.
func (p *pipeline) audits() []*verbatimv1.AuditEvent {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kafkaclient.New(p.kafka(), kgo.ConsumeTopics(schemas.TopicAudit), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		p.t.Fatal(err)
	}
	defer cl.Close()
	var out []*verbatimv1.AuditEvent
	stacktest.ReadBack(ctx, p.t, cl, func(r *kgo.Record) {
		ev := &verbatimv1.AuditEvent{}
		mustUnmarshal(p.t, r.Value, ev)
		if ev.GetTenant() == p.tenant {
			out = append(out, ev)
		}
	}, schemas.TopicAudit)
	return out
}

// TestReprocessOpusDecodedByALaterBuild: a call recorded by a build that
// did not decode Opus (its stream kept as Ogg only, absent from the WAV)
// is reprocessed by this build. The new recording supersedes the old,
// holds the stream the old one lacked, and is sample for sample what this build records
// live (which the oracle checks against ffmpeg's decode); the old one is
// kept; both are announced with their ledgers, and the job is audited.
// Reprocessing again with the same code makes nothing new.
func TestReprocessOpusDecodedByALaterBuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const capture = "pcap/wireshark_sip-rtp-opus.pcap"
	p := kfakePipeline(t)
	restore := processors.WithoutDecoders(t, "OPUS")
	p.ingest(capture)
	p.process(nil)
	restore()
	before, _ := p.recordings()
	if len(before) != 1 {
		t.Fatalf("%d calls recorded, want 1", len(before))
	}
	var callID string
	var old stored
	for id, rs := range before {
		callID, old = id, rs[0]
	}
	if c := schemas.Summarize(old.ev.GetLedgers()); c.Status == schemas.StatusComplete {
		t.Fatalf("the build without Opus says %s", c)
	}
	if old.ev.GetMediaEnded() == nil || old.ev.GetProcessing() == "" || strings.Contains(old.ev.GetProcessing(), "OPUS") {
		t.Fatalf("the first recording carries media_ended %v, processing %q", old.ev.GetMediaEnded() != nil, old.ev.GetProcessing())
	}
	objects := p.objectCount()

	sel := processors.Selection{Tenant: p.tenant, Codecs: []string{"opus"}}
	dry, err := p.reprocess(ctx, "opus", sel, func(c *processors.ReprocessConfig) { c.DryRun = true })
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Plan) != 1 || dry.Plan[0].Skip != "" || !strings.Contains(dry.Plan[0].Reason, "opus decoded") || dry.Stats.Remaining != 1 {
		t.Fatalf("dry run: %+v, %+v", dry.Plan, dry.Stats)
	}
	if n := p.objectCount(); n != objects {
		t.Fatalf("the dry run stored %d objects", n-objects)
	}
	rep, err := p.reprocess(ctx, "opus", sel, nil)
	if err != nil || rep.Stats.Done != 1 || rep.Stats.Remaining != 0 {
		t.Fatalf("reprocess: %v, %+v", err, rep.Stats)
	}
	after, _ := p.recordings()
	rs := after[callID]
	if len(rs) != 2 {
		t.Fatalf("%d recordings of the call, want the first and the reprocessed", len(rs))
	}
	var again stored
	for _, r := range rs {
		if r.ev.GetSupersedes() != nil {
			again = r
		}
	}
	sup := again.ev.GetSupersedes()
	if sup.GetRecordingId() != old.ev.GetRecordingId() || sup.GetGeneration() != 1 || sup.GetJob() != "opus" || !strings.HasPrefix(sup.GetReason(), "reprocessed: opus decoded") {
		t.Fatalf("supersedes %v", sup)
	}
	if again.ev.GetRecordingId() != dry.Plan[0].NewRecordingID || again.ev.GetRawObjectKey() != old.ev.GetRawObjectKey() ||
		again.ev.GetProcessing() != processors.Processing(false, false) {
		t.Fatalf("new recording %s (planned %s), raw %s (old %s), processing %q", again.ev.GetRecordingId(), dry.Plan[0].NewRecordingID,
			again.ev.GetRawObjectKey(), old.ev.GetRawObjectKey(), again.ev.GetProcessing())
	}
	if c := schemas.Summarize(again.ev.GetLedgers()); c.Status != schemas.StatusComplete {
		t.Fatalf("reprocessed recording: %s", c)
	}
	// The new objects: the WAV and the Ogg Opus beside it; no raw copy.
	if n := p.objectCount(); n != objects+2 {
		t.Fatalf("%d objects stored, want 2 (recording and Ogg)", n-objects)
	}
	// What this build records of the same capture live.
	q := kfakePipeline(t)
	q.ingest(capture)
	q.process(nil)
	live, _ := q.recordings()
	for _, lr := range live {
		ll, lrr := channels(t, lr[0].wav)
		gl, gr := channels(t, again.wav)
		// The capture holds one Opus stream: silent in the first
		// recording, there in the new one.
		if ol, or := channels(t, old.wav); !isSilent(ol) || !isSilent(or) || isSilent(gl) && isSilent(gr) {
			t.Fatal("the Opus stream is in the first recording, or not in the reprocessed one")
		}
		if !bytes.Equal(pcmBytes(ll), pcmBytes(gl)) || !bytes.Equal(pcmBytes(lrr), pcmBytes(gr)) {
			t.Fatalf("the reprocessed recording differs from this build's live recording (%d and %d samples)", len(gl), len(ll))
		}
	}
	var audited int
	for _, a := range p.audits() {
		if a.GetAction() == "recording.reprocess" && a.GetTarget().GetId() == old.ev.GetRecordingId() &&
			a.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS && strings.Contains(a.GetReason(), again.ev.GetRecordingId()) {
			audited++
		}
	}
	if audited != 1 {
		t.Fatalf("%d audit events of the reprocessing, want 1", audited)
	}

	// The same code again, in another job: nothing new.
	rep, err = p.reprocess(ctx, "opus-again", sel, nil)
	if err != nil || rep.Stats.ToDo != 0 || len(rep.Plan) != 1 || !strings.Contains(rep.Plan[0].Skip, "already reprocessed") {
		t.Fatalf("second job: %v, %+v, %+v", err, rep.Plan, rep.Stats)
	}
	if again2, _ := p.recordings(); len(again2[callID]) != 2 || p.objectCount() != objects+2 {
		t.Fatalf("the second job added recordings (%d) or objects", len(again2[callID]))
	}
}

// TestReprocessKilledMidway: a job stopped after its first committed
// transaction and started again redoes each call exactly once: every
// recording is superseded once, by the id the plan named, with one object
// each, and the job's count adds up. A job name cannot be reused with
// another selection.
func TestReprocessKilledMidway(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap") // again: new keys, two more recordings
	p.process(nil)
	first, _ := p.recordings()
	sel := processors.Selection{Tenant: p.tenant}
	ctx := context.Background()

	dry, err := p.reprocess(ctx, "fix", sel, func(c *processors.ReprocessConfig) { c.DryRun = true })
	if err != nil || len(dry.Plan) != 4 || dry.Stats.Skipped != 4 || !strings.Contains(dry.Plan[0].Skip, "recorded by this processing already") {
		t.Fatalf("without --force, G.711 calls this build recorded are not redone: %v, %+v", err, dry.Plan)
	}
	// By call and by time: the two recordings of one call; none after now.
	var oneCall string
	for id := range first {
		oneCall = id
	}
	dryRun := func(c *processors.ReprocessConfig) { c.DryRun = true }
	if byCall, err := p.reprocess(ctx, "by-call", processors.Selection{Tenant: p.tenant, CallIDs: []string{oneCall}}, dryRun); err != nil ||
		len(byCall.Plan) != 2 || byCall.Plan[0].CallID != oneCall || byCall.Plan[1].CallID != oneCall {
		t.Fatalf("by call id: %v, %+v", err, byCall.Plan)
	}
	if later, err := p.reprocess(ctx, "by-time", processors.Selection{Tenant: p.tenant, From: time.Now()}, dryRun); err != nil || len(later.Plan) != 0 {
		t.Fatalf("from now on: %v, %+v", err, later.Plan)
	}
	objects := p.objectCount()
	force := func(c *processors.ReprocessConfig) {
		c.Force, c.Reason, c.CallsPerTransaction, c.Workers = true, "ticket 42", 1, 1
	}
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	rep1, err := p.reprocess(stopCtx, "fix", sel, func(c *processors.ReprocessConfig) {
		force(c)
		c.Progress = func(s processors.ReprocessStats) {
			if s.Done > 0 {
				stop() // killed after a committed transaction
			}
		}
	})
	if err == nil || rep1.Stats.Done == 0 || rep1.Stats.Done >= 4 {
		t.Fatalf("first run: %v, %+v: want it stopped part way", err, rep1.Stats)
	}
	rep2, err := p.reprocess(ctx, "fix", sel, force)
	if err != nil || rep2.Stats.ToDo != 4 || rep2.Stats.Done != 4 || rep2.Stats.Failed != 0 || rep2.Stats.Remaining != 0 {
		t.Fatalf("second run: %v, %+v", err, rep2.Stats)
	}
	var doneBefore int
	planned := map[string]string{} // new recording id -> superseded id
	for _, pl := range rep2.Plan {
		if pl.Done {
			doneBefore++
		}
		planned[pl.NewRecordingID] = pl.RecordingID
	}
	if doneBefore != rep1.Stats.Done {
		t.Fatalf("the restarted job found %d done, the first run committed %d", doneBefore, rep1.Stats.Done)
	}
	after, _ := p.recordings()
	superseded := map[string]int{}
	var total int
	for id, rs := range after {
		if len(rs) != 2*len(first[id]) {
			t.Fatalf("call %s: %d recordings, want %d", id, len(rs), 2*len(first[id]))
		}
		for _, r := range rs {
			if s := r.ev.GetSupersedes(); s != nil {
				total++
				superseded[s.GetRecordingId()]++
				if planned[r.ev.GetRecordingId()] != s.GetRecordingId() || s.GetReason() != "reprocessed: redone on request (ticket 42)" {
					t.Fatalf("recording %s supersedes %s (%q); the plan said %s", r.ev.GetRecordingId(), s.GetRecordingId(), s.GetReason(), planned[r.ev.GetRecordingId()])
				}
			}
		}
	}
	if total != 4 || len(superseded) != 4 {
		t.Fatalf("%d reprocessed recordings superseding %d, want 4 and 4", total, len(superseded))
	}
	if n := p.objectCount(); n != objects+4 {
		t.Fatalf("%d objects stored, want 4", n-objects)
	}
	if _, err := p.reprocess(ctx, "fix", processors.Selection{Tenant: p.tenant, Statuses: []string{"partial"}}, force); err == nil ||
		!strings.Contains(err.Error(), "another selection") {
		t.Fatalf("job reused with another selection: %v", err)
	}
}

// TestReprocessFindsStreamsOnTheMediaTopic: a recording announced before
// RecordingStored carried media_ended is redone with the MediaEnded found
// on the media topic while the topic holds it (the one of its own data
// key: the call is ingested twice); once retention has removed it, the
// plan says so instead of guessing the streams.
func TestReprocessFindsStreamsOnTheMediaTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := kfakePipeline(t)
	restoreDec := processors.WithoutDecoders(t, "OPUS")
	restoreEnd := processors.AsBeforeMediaEnded(t)
	p.ingest("pcap/wireshark_sip-rtp-opus.pcap")
	p.process(nil)
	restoreDec()
	restoreEnd()
	recs, _ := p.recordings()
	for _, rs := range recs {
		if rs[0].ev.GetMediaEnded() != nil {
			t.Fatal("the recording carries media_ended")
		}
	}
	sel := processors.Selection{Tenant: p.tenant}
	dry, err := p.reprocess(ctx, "old", sel, func(c *processors.ReprocessConfig) { c.DryRun = true })
	if err != nil || len(dry.Plan) != 1 || !strings.Contains(dry.Plan[0].Reason, "opus decoded") {
		t.Fatalf("dry run with the media topic: %v, %+v", err, dry.Plan)
	}

	rep, err := p.reprocess(ctx, "old", sel, nil)
	if err != nil || rep.Stats.Done != 1 {
		t.Fatalf("reprocess: %v, %+v", err, rep.Stats)
	}
	for _, rs := range func() map[string][]stored { r, _ := p.recordings(); return r }() {
		for _, r := range rs {
			if r.ev.GetSupersedes() != nil && (r.ev.GetMediaEnded() == nil || schemas.Summarize(r.ev.GetLedgers()).Status != schemas.StatusComplete) {
				t.Fatalf("reprocessed recording: media_ended %v, %s", r.ev.GetMediaEnded() != nil, schemas.Summarize(r.ev.GetLedgers()))
			}
		}
	}

	// The capture again, by the earlier build (a new data key: a second
	// recording of the call), then retention removes the media topic's
	// records.
	restoreDec = processors.WithoutDecoders(t, "OPUS")
	restoreEnd = processors.AsBeforeMediaEnded(t)
	p.ingest("pcap/wireshark_sip-rtp-opus.pcap")
	p.process(nil)
	restoreDec()
	restoreEnd()
	cl, err := kafkaclient.New(p.kafka())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, schemas.TopicMedia)
	if err != nil {
		t.Fatal(err)
	}
	del, err := adm.DeleteRecords(ctx, ends.Offsets())
	if err == nil {
		err = del.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	gone, err := p.reprocess(ctx, "later", sel, func(c *processors.ReprocessConfig) { c.DryRun = true })
	var skips []string
	for _, pl := range gone.Plan {
		skips = append(skips, pl.Skip)
	}
	slices.Sort(skips)
	if err != nil || len(skips) != 2 || !strings.Contains(skips[0], "already reprocessed") || !strings.Contains(skips[1], "nor on the media topic") {
		t.Fatalf("dry run without the media topic: %v, %q", err, skips)
	}
}

// TestReprocessTamperedRawMediaFails: a raw media object altered in the
// store is not made into a recording: the job names the call and the
// reason, audits it, and leaves its current recording as it was; the
// other call is redone. Running the job again says the same.
func TestReprocessTamperedRawMediaFails(t *testing.T) {
	ctx := context.Background()
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	p.process(nil)
	before, _ := p.recordings()
	var victim string
	for id, rs := range before {
		victim = id
		path := filepath.Join(p.objects, filepath.FromSlash(rs[0].ev.GetRawObjectKey()))
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		break
	}
	force := func(c *processors.ReprocessConfig) { c.Force, c.Reason = true, "ticket 7" }
	for run := range 2 {
		rep, err := p.reprocess(ctx, "tamper", processors.Selection{Tenant: p.tenant}, force)
		if err == nil || rep.Stats.Done != 1 || rep.Stats.Failed != 1 || rep.Stats.Remaining != 0 || rep.Stats.Failures[victim] == "" {
			t.Fatalf("run %d: %v, %+v", run+1, err, rep.Stats)
		}
		if run == 0 && !strings.Contains(rep.Stats.Failures[victim], "does not match the SHA-256 its recording announced") {
			t.Fatalf("failure: %q", rep.Stats.Failures[victim])
		}
		t.Logf("run %d: %v; %s", run+1, err, rep.Stats.Failures[victim])
	}
	after, _ := p.recordings()
	for id, rs := range after {
		want := 2
		if id == victim {
			want = 1
		}
		if len(rs) != want {
			t.Fatalf("call %s: %d recordings, want %d", id, len(rs), want)
		}
	}
	var errs int
	for _, a := range p.audits() {
		if a.GetAction() == "recording.reprocess" && a.GetResult() == verbatimv1.AuditResult_AUDIT_RESULT_ERROR &&
			a.GetTarget().GetId() == before[victim][0].ev.GetRecordingId() {
			errs++
		}
	}
	if errs != 1 {
		t.Fatalf("%d audit events of the failure, want 1", errs)
	}
}

// TestReprocessMasksDTMFForAPCITenant: a tenant that records in PCI mode
// now, whose calls were recorded before it did (raw media kept, tones in
// the WAV), has them redone masked: the new recording is what this build
// records live in PCI mode, sample for sample, and says "pci" in its
// processing.
func TestReprocessMasksDTMFForAPCITenant(t *testing.T) {
	ctx := context.Background()
	const capture = "pcap/metaswitch_09a_2833_dtmf.pcap"
	p := kfakePipeline(t)
	p.ingest(capture)
	p.process(nil)
	rep, err := p.reprocess(ctx, "pci", processors.Selection{Tenant: p.tenant}, func(c *processors.ReprocessConfig) {
		c.PCI = func(string) bool { return true }
		c.Force, c.Reason = true, "the tenant records in PCI mode now"
	})
	if err != nil || rep.Stats.Done != 1 || !strings.HasSuffix(rep.Processing, " pci") {
		t.Fatalf("reprocess: %v, %+v, processing %q", err, rep.Stats, rep.Processing)
	}
	live := kfakePipeline(t)
	live.pci = true
	live.ingest(capture)
	live.process(nil)
	want, _ := live.recordings()
	got, _ := p.recordings()
	for call, rs := range got {
		var again *stored
		for i := range rs {
			if rs[i].ev.GetSupersedes() != nil {
				again = &rs[i]
			}
		}
		if again == nil || again.ev.GetProcessing() != rep.Processing {
			t.Fatalf("call %s: no reprocessed recording with processing %q", call, rep.Processing)
		}
		for _, w := range want {
			if !bytes.Equal(w[0].wav, again.wav) {
				t.Fatal("the reprocessed recording differs from this build's live PCI recording: the tones are not masked alike")
			}
		}
		if bytes.Equal(rs[0].wav, again.wav) {
			t.Fatal("the reprocessed recording is the unmasked one")
		}
	}
}

// TestReprocessKeepsTheLock: recordings stored under a 30-day retention,
// reprocessed by a job with no retention of its own: each new recording
// is locked as long as the one it supersedes (a policy never shortens
// what was stored).
func TestReprocessKeepsTheLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := kfakePipeline(t)
	p.retention = 30 * 24 * time.Hour
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	if st := p.process(nil); st.Recorded != 2 {
		t.Fatalf("stats %+v", st)
	}
	before, _ := p.recordings()
	if _, err := p.reprocess(ctx, "keep-lock", processors.Selection{Tenant: p.tenant}, func(c *processors.ReprocessConfig) {
		c.Force, c.Reason = true, "ticket 9"
	}); err != nil {
		t.Fatal(err)
	}
	after, _ := p.recordings()
	for call, rs := range after {
		if len(rs) != 2 {
			t.Fatalf("call %s: %d recordings", call, len(rs))
		}
		old, redone := before[call][0].ev, rs[len(rs)-1].ev
		if redone.GetSupersedes() == nil || !redone.GetRetainUntil().AsTime().Equal(old.GetRetainUntil().AsTime()) {
			t.Fatalf("call %s: the new recording is locked until %v, the old until %v", call, redone.GetRetainUntil().AsTime(), old.GetRetainUntil().AsTime())
		}
		if err := p.store.Delete(ctx, redone.GetObjectKey()); !errors.Is(err, objstore.ErrRetained) {
			t.Fatalf("call %s: delete of the new recording: %v", call, err)
		}
	}
}
