package kafkaclient_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
)

// testConsumeTransformProduce is the processors' pattern: a group member
// consumes, produces derived records and commits its offsets in one
// transaction (kgo.GroupTransactSession). A first member aborts its
// transaction, as a crash would; a second member reprocesses the same
// input, and the output holds every result exactly once.
func testConsumeTransformProduce(t *testing.T, brokers []string, suffix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	in, out, group := "verbatim.test-in"+suffix, "verbatim.test-out"+suffix, "verbatim-test"+suffix
	const n = 20

	admin, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := kafkaclient.EnsureTopics(ctx, admin, []schemas.Topic{
		{Name: in, Partitions: 2, Cleanup: schemas.CleanupDelete},
		{Name: out, Partitions: 2, Cleanup: schemas.CleanupDelete},
	}, 1); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := &kgo.Record{Topic: in, Key: []byte(fmt.Sprintf("call-%d", i%4)), Value: []byte(fmt.Sprintf("packet-%02d", i))}
		if err := admin.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// process runs one member until it has consumed all n inputs, then ends
	// its transaction with commit or abort.
	process := func(commit bool) {
		t.Helper()
		sess, err := kafkaclient.NewGroupTransactSession(stacktest.KafkaFor(brokers, ""),
			kgo.TransactionalID("verbatim-test-processor"+suffix),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(in),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.RequireStableFetchOffsets(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		if err := sess.Begin(); err != nil {
			t.Fatal(err)
		}
		seen := 0
		for seen < n {
			fs := sess.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("consumed %d of %d inputs: %v", seen, n, ctx.Err())
			}
			fs.EachRecord(func(r *kgo.Record) {
				seen++
				sess.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: []byte(strings.ToUpper(string(r.Value)))}, nil)
			})
		}
		committed, err := sess.End(ctx, kgo.TransactionEndTry(commit))
		if err != nil {
			t.Fatalf("End(commit=%v): %v", commit, err)
		}
		if committed != commit {
			t.Fatalf("End(commit=%v) committed=%v", commit, committed)
		}
	}
	process(false) // crashed before commit
	process(true)  // restarted member

	cons, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""),
		kgo.ConsumeTopics(out), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[string]int{}
	recs := consumeAtLeast(ctx, t, cons, n)
	// Anything more within two seconds is a duplicate.
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	recs = append(recs, cons.PollFetches(pctx).Records()...)
	for _, r := range recs {
		got[string(r.Value)]++
	}
	total := len(recs)
	if total != n || len(got) != n {
		t.Fatalf("output has %d records (%d distinct), want %d exactly once: %v", total, len(got), n, got)
	}
	offs, err := kadm.NewClient(admin).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum != n {
		t.Fatalf("group committed offsets sum to %d, want %d", sum, n)
	}
	t.Logf("aborted then committed: %d outputs exactly once, group offsets at %d", total, sum)
}

func TestConsumeTransformProduceKfake(t *testing.T) {
	testConsumeTransformProduce(t, kfakeBrokers(t), ".kfake")
}

func TestConsumeTransformProduceKafka(t *testing.T) {
	brokers, suffix := realBrokers(t)
	testConsumeTransformProduce(t, brokers, suffix)
}
