package kafkaclient_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// testTransactions is the contract Verbatim needs from a broker: topics
// from the catalogue, a transaction that commits and one that aborts, and a
// read-committed consumer that sees only the committed event.
func testTransactions(t *testing.T, brokers []string, suffix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	admin, err := kafkaclient.New(stacktest.KafkaFor(brokers, "test-admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics := schemas.Topics()
	for i := range topics {
		topics[i].Name += suffix
		topics[i].Partitions = 3
	}
	for range 2 { // idempotent
		if err := kafkaclient.EnsureTopics(ctx, admin, topics, 1); err != nil {
			t.Fatalf("EnsureTopics: %v", err)
		}
	}
	calls, keysTopic := topics[0].Name, topics[4].Name
	// A topic just created may not be described yet by the broker that
	// answers (KRaft metadata propagates): ask until it is.
	var policy string
	var lastErr error
	for policy == "" && ctx.Err() == nil {
		cfgs, err := kadm.NewClient(admin).DescribeTopicConfigs(ctx, keysTopic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := cfgs.On(keysTopic, nil)
		if err == nil {
			err = rc.Err
		}
		if lastErr = err; err == nil {
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" {
					policy = c.MaybeValue()
				}
			}
		}
		if policy == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if policy != schemas.CleanupCompact {
		t.Fatalf("%s cleanup.policy = %q, want compact (last error %v)", keysTopic, policy, lastErr)
	}

	prod, err := kafkaclient.New(stacktest.KafkaFor(brokers, "test-producer"),
		kgo.TransactionalID("verbatim-test-"+suffix), kgo.DefaultProduceTopic(calls))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()

	produce := func(callID string, commit bool) {
		t.Helper()
		ev := &verbatimv1.CallStarted{CallId: callID, StartedAt: timestamppb.Now(), DataKeyId: "dk-" + callID}
		rec, err := schemas.NewRecord(calls, []byte(callID), schemas.Envelope{ID: "ev-" + callID, Tenant: "demo",
			CallID: callID, OccurredAt: time.Now(), Producer: "test"}, ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		if err := prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("end transaction (commit=%v): %v", commit, err)
		}
	}
	produce("aborted-call", false)
	produce("committed-call", true)

	cons, err := kafkaclient.New(stacktest.KafkaFor(brokers, "test-consumer"),
		kgo.ConsumeTopics(calls), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := consumeAtLeast(ctx, t, cons, 1)
	if len(got) != 1 || string(got[0].Key) != "committed-call" {
		keys := make([]string, len(got))
		for i, r := range got {
			keys[i] = string(r.Key)
		}
		t.Fatalf("read-committed consumer got %v, want only committed-call", keys)
	}
	env, err := schemas.ParseHeaders(got[0].Headers)
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	var ev verbatimv1.CallStarted
	if err := proto.Unmarshal(got[0].Value, &ev); err != nil {
		t.Fatal(err)
	}
	if env.Type != "verbatim.v1.CallStarted" || env.Tenant != "demo" || ev.GetCallId() != "committed-call" {
		t.Fatalf("consumed %+v / %v", env, &ev)
	}
	t.Logf("consumed committed %s at offset %d; the aborted one stayed invisible", env.Type, got[0].Offset)
}

func TestTransactionsKfake(t *testing.T) { testTransactions(t, kfakeBrokers(t), ".kfake") }

// TestTransactionsKafka runs the contract against the local stack's real
// Apache Kafka broker.
func TestTransactionsKafka(t *testing.T) {
	brokers, suffix := realBrokers(t)
	testTransactions(t, brokers, suffix)
}

// kfakeBrokers starts an in-process broker for the test.
func kfakeBrokers(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// realBrokers returns the local stack's brokers and a suffix that keeps
// this run's topics apart from earlier runs'.
func realBrokers(t *testing.T) ([]string, string) {
	t.Helper()
	return strings.Split(stacktest.Env(t, "VERBATIM_KAFKA_BROKERS"), ","), "." + time.Now().UTC().Format("20060102T150405")
}

// consumeAtLeast polls cl until it has at least n records, failing the test
// when ctx ends first.
func consumeAtLeast(ctx context.Context, t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		got = append(got, fs.Records()...)
	}
	return got
}
