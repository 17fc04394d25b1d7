package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestFollowRecordings: the example prints each recording event of the
// topic, with its completeness from the ledgers, and stops at the end
// offsets it found (the last record of a partition being a transaction's
// commit marker, as the processor writes them).
func TestFollowRecordings(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, schemas.TopicRecordings))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.TransactionalID("example-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []proto.Message{
		&verbatimv1.RecordingStored{CallId: "c1", RecordingId: "r1", Format: "audio/wav",
			Ledgers: []*verbatimv1.StreamLedger{{StreamId: "caller-audio", Captured: 10, Recorded: 10}}},
		&verbatimv1.RecordingFailed{CallId: "c2", RecordingId: "r2", Reason: "the call's data key is missing", RawObjectKey: "demo/raw"},
		&verbatimv1.RecordingStored{CallId: "c1", RecordingId: "r3", Format: "audio/wav",
			Ledgers:    []*verbatimv1.StreamLedger{{StreamId: "caller-audio", Captured: 10, Recorded: 10}},
			Supersedes: &verbatimv1.Supersession{RecordingId: "r1", Reason: "reprocessed: g729 decoded (stream caller-audio)", Job: "j1", Generation: 1}},
	} {
		env := schemas.Envelope{ID: string(m.ProtoReflect().Descriptor().Name()) + m.(interface{ GetRecordingId() string }).GetRecordingId(), Tenant: "demo", CallID: "c", OccurredAt: time.Now(), Producer: "test"}
		rec, err := schemas.NewRecord(schemas.TopicRecordings, []byte("c"), env, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"--brokers", strings.Join(cluster.ListenAddrs(), ","), "--from", "start"}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"stored   call c1 recording r1: audio/wav", "complete, 10 audio packets", "stream caller-audio: 10 captured, 10 recorded",
		"FAILED   call c2: the call's data key is missing",
		"stored   call c1 recording r3", "supersedes r1 (generation 1, job j1): reprocessed: g729 decoded (stream caller-audio)"} {
		if !strings.Contains(got, want) {
			t.Fatalf("output lacks %q:\n%s", want, got)
		}
	}
	t.Log(got)
}
