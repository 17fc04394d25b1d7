package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func runPlay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("play", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: verbatim play [flags] CALL-ID -o out.wav\n\nWrites the call's decrypted recording after checking both of its SHA-256 digests.\nCALL-ID is Verbatim's call id or the SIP Call-ID. The playback is audited.")
		fs.PrintDefaults()
	}
	out := fs.String("o", "", "output WAV file (required; written only once verified)")
	streamID := fs.String("stream", "", "instead of the WAV, write this stream kept in its own codec (e.g. an Opus stream as Ogg); search --json lists them")
	tenant := fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant that owns the call")
	recordingID := fs.String("recording", "", "play this recording of the call instead of its current one: one that reprocessing superseded (search --history lists them)")
	keyWait := fs.Duration("key-wait", 30*time.Second, "how long to wait for the recording's key in the key registry")
	kafka := addKafkaFlags(fs)
	ch := addClickHouseFlags(fs)
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	// Flags may follow the call id: verbatim play CALL-ID -o out.wav.
	var callID string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		if callID != "" {
			return fmt.Errorf("play: one call id only, got %q and %q", callID, fs.Arg(0))
		}
		callID, rest = fs.Arg(0), fs.Args()[1:]
	}
	if callID == "" || *out == "" {
		fs.Usage()
		return errors.New("play: a call id and -o are required")
	}

	conn, db, err := ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rs, err := search.Search(ctx, conn, db, search.Query{Tenant: *tenant, CallID: callID, Limit: 2, History: *recordingID != ""})
	if err != nil {
		return err
	}
	switch {
	case len(rs) == 0:
		return fmt.Errorf("play: no call %q for tenant %s", callID, *tenant)
	case len(rs) > 1:
		return fmt.Errorf("play: %q names several calls (%s, %s, ...): use Verbatim's call id", callID, rs[0].CallID, rs[1].CallID)
	case rs[0].Recording == nil:
		return fmt.Errorf("play: call %s has no recording (%s)", rs[0].CallID, rs[0].Status)
	}
	call, rec := rs[0], rs[0].Recording
	fmt.Fprintf(stderr, "play: as operator %s of tenant %s, reading the stores directly (signed-in users play through verbatim api)\n", operator(), *tenant)
	if *recordingID != "" {
		ids := []string{rec.RecordingID}
		for i := range call.History {
			ids = append(ids, call.History[i].RecordingID)
			if call.History[i].RecordingID == *recordingID {
				rec = &call.History[i]
			}
		}
		if rec.RecordingID != *recordingID {
			return fmt.Errorf("play: call %s has no recording %s (it has %s)", call.CallID, *recordingID, strings.Join(ids, ", "))
		}
		if rec.Failure != "" {
			return fmt.Errorf("play: recording %s of call %s failed (%s): there is nothing to play", rec.RecordingID, call.CallID, rec.Failure)
		}
	}

	opener, closeOpener, err := openPlayback(ctx, kafka, kf, sf, "verbatim-play", stderr)
	if err != nil {
		return err
	}
	defer closeOpener()
	opener.KeyWait = *keyWait

	// Every access is audited, and the audit comes first: no audit, no
	// playback.
	if err := audit(ctx, kafka, stderr, *tenant, call.CallID, rec.RecordingID); err != nil {
		return fmt.Errorf("play: audit event not written, so nothing is played: %w", err)
	}
	objectKey, cipherWant, plainWant := rec.ObjectKey, rec.CiphertextSHA256, rec.PlaintextSHA256
	what := fmt.Sprintf("%s, %d channels", rec.Duration.Round(time.Millisecond), rec.Channels)
	if *streamID != "" {
		o, err := streamObject(rec.StreamObjects, *streamID)
		if err != nil {
			return fmt.Errorf("play: call %s: %w", call.CallID, err)
		}
		objectKey, cipherWant, plainWant = o.GetObjectKey(), hex.EncodeToString(o.GetCiphertextSha256()), hex.EncodeToString(o.GetPlaintextSha256())
		what = "stream " + o.GetStreamId() + ", " + o.GetFormat()
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".verbatim-play-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	n, err := opener.Decrypt(ctx, *tenant, rec.KeyID, playback.Object{Key: objectKey, CiphertextSHA256: cipherWant, PlaintextSHA256: plainWant}, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("play: %w", err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: call %s, %s, %d bytes; SHA-256 of ciphertext and plaintext verified\n", *out, call.CallID, what, n)
	return nil
}

// streamObject finds stream id among a recording's stream objects (the
// JSON search keeps).
func streamObject(objects, id string) (*verbatimv1.StreamObject, error) {
	var rs verbatimv1.RecordingStored
	if objects != "" {
		if err := protojson.Unmarshal([]byte(objects), &rs); err != nil {
			return nil, fmt.Errorf("stream objects: %w", err)
		}
	}
	var ids []string
	for _, o := range rs.GetStreamObjects() {
		if o.GetStreamId() == id {
			return o, nil
		}
		ids = append(ids, o.GetStreamId())
	}
	return nil, fmt.Errorf("no stream %q kept on its own (there are: %q)", id, ids)
}

// operator is who an operator's command acts as: the OS user, with direct
// access to the stores (no sign-in: signed-in users go through the API).
func operator() string {
	if u, err := user.Current(); err == nil {
		return "os-user:" + u.Username
	}
	return "os-user:unknown"
}

// audit records who played which recording on the audit topic.
func audit(ctx context.Context, kafka kafkaFlags, stderr io.Writer, tenant, callID, recordingID string) error {
	cl, err := kafka.client("verbatim-play", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	subject := operator()
	now := time.Now()
	id := schemas.RandomID()
	host, _ := os.Hostname()
	rec, err := schemas.NewRecord(schemas.TopicAudit, []byte(tenant),
		schemas.Envelope{ID: id, Tenant: tenant, CallID: callID, OccurredAt: now, Producer: "verbatim-play"},
		&verbatimv1.AuditEvent{EventId: id, OccurredAt: timestamppb.New(now), Tenant: tenant, Action: "recording.play",
			Actor:  &verbatimv1.Actor{Subject: subject, Role: "administrator", Tenant: tenant},
			Target: &verbatimv1.Target{Type: "recording", Id: recordingID}, Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS,
			Reason: "verbatim play (command line)", UserAgent: "verbatim/" + version(), SourceAddress: host})
	if err != nil {
		return err
	}
	return cl.ProduceSync(ctx, rec).FirstErr()
}
