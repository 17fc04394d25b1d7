package stacktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadBack reads topics from their start up to their end offsets as they
// are when it is called, passing each record to fn. cons must consume the
// topics from the start (read committed). A partition whose end is a
// transaction marker, or aborted records, never shows a record at its last
// offset: once nothing has arrived for quiet and every such partition's
// last stable offset has reached its end (no transaction still open
// below it), those are taken as read.
func ReadBack(ctx context.Context, t testing.TB, cons *kgo.Client, quiet time.Duration, fn func(*kgo.Record), topics ...string) {
	t.Helper()
	// A partition's end may fail to list for a moment (its leader not yet
	// known to this new client): a partition silently left out would not
	// be waited for, and its records would look missing. List again.
	var ends kadm.ListedOffsets
	for {
		var err error
		ends, err = kadm.NewClient(cons).ListEndOffsets(ctx, topics...)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("list end offsets: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	left := map[string]int64{} // "topic/partition" -> end offset not yet reached
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[fmt.Sprintf("%s/%d", o.Topic, o.Partition)] = o.Offset
		}
	})
	var seen bool
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, quiet)
		fs := cons.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("records not read back: %d partitions short: %v", len(left), left)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		if fs.NumRecords() == 0 && seen && stable(ctx, t, cons, left) {
			return // only markers and aborted records remain
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen = true
			if k := fmt.Sprintf("%s/%d", r.Topic, r.Partition); r.Offset+1 >= left[k] {
				delete(left, k)
			}
			fn(r)
		})
	}
}

// stable reports whether the last stable offset of every partition in left
// has reached the end it must be read to: what a read-committed consumer
// has not delivered by then are markers and aborted records. Below it, an
// open transaction still holds records back.
func stable(ctx context.Context, t testing.TB, cons *kgo.Client, left map[string]int64) bool {
	t.Helper()
	var topics []string
	for k := range left {
		topic := k[:strings.LastIndexByte(k, '/')]
		if !slices.Contains(topics, topic) {
			topics = append(topics, topic)
		}
	}
	lsos, err := kadm.NewClient(cons).ListCommittedOffsets(ctx, topics...)
	if err != nil || lsos.Error() != nil {
		return false // ask again after the next quiet poll
	}
	ok := true
	lsos.Each(func(o kadm.ListedOffset) {
		if end, want := left[fmt.Sprintf("%s/%d", o.Topic, o.Partition)]; want && o.Offset < end {
			ok = false
		}
	})
	return ok
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
