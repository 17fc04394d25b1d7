package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
)

// ReadBack reads topics from their start up to their end offsets as they
// are when it is called, passing each data record to fn. cons must consume
// the topics from the start, read committed, with kgo.KeepControlRecords:
// the transaction markers are what let a partition that ends in one be read
// to its end. It returns once every partition has been read to that end;
// it never takes a quiet poll for the end (a poll that brought nothing may
// only mean that a partition was not fetched yet).
func ReadBack(ctx context.Context, t testing.TB, cons *kgo.Client, fn func(*kgo.Record), topics ...string) {
	t.Helper()
	if keep, _ := cons.OptValue(kgo.KeepControlRecords).(bool); !keep {
		t.Fatal("stacktest.ReadBack: the client must consume with kgo.KeepControlRecords()")
	}
	starts, ends, err := kafkaclient.Bounds(ctx, kadm.NewClient(cons), topics...)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	read := kafkaclient.NewProgress()
	for {
		behind := read.Behind(starts, ends)
		if len(behind) == 0 {
			return
		}
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("records not read back: %d partitions short of their end: %v", len(behind), behind)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			read.Observe(r)
			if !r.Attrs.IsControl() {
				fn(r)
			}
		})
	}
}

// StartGroupAtEnd commits group's offsets at the end of topic, so the
// group reads only what comes next (earlier runs' records on a shared
// broker are not the test's business). Topics just created may not be
// served yet by every partition's leader (UNKNOWN_TOPIC_OR_PARTITION for a
// moment): it tries again until ctx ends.
func StartGroupAtEnd(ctx context.Context, t testing.TB, cl *kgo.Client, group, topic string) {
	t.Helper()
	adm := kadm.NewClient(cl)
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			if err = adm.CommitAllOffsets(ctx, group, ends.Offsets()); err == nil {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("start group %s at the end of %s: %v", group, topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
