package kafkaclient

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Follower reads topics from their start, outside any consumer group, and
// hands every record to an apply function: the way to hold a view of a
// compacted topic (the key registry, group policies). A view built through
// a committed group offset would forget, after a restart, every record it
// read before.
//
// Sync tells when the view holds everything written before it was called.
type Follower struct {
	cl     *kgo.Client
	adm    *kadm.Client
	topics []string
	apply  func(*kgo.Record) error
	cancel context.CancelFunc
	done   chan struct{}
	mu     struct {
		sync.Mutex
		read    *Progress
		changed chan struct{} // closed and replaced on every fetch
		err     error         // the last fetch or apply error
	}
}

// FollowOpts are the options a Follower's client needs: topics from their
// start, with transaction markers delivered (so that a partition ending
// in one can be seen read to its end), read committed.
func FollowOpts(topics ...string) []kgo.Opt {
	return []kgo.Opt{kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords()}
}

// Follow starts following topics with cl, a client made with FollowOpts
// of the same topics and no consumer group. apply is called for every
// record but control records, in order per partition, from one goroutine;
// an error it returns is kept for Sync to report, and the record counts as
// read. The Follower owns cl and closes it on Close.
func Follow(cl *kgo.Client, apply func(*kgo.Record) error, topics ...string) *Follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{cl: cl, adm: kadm.NewClient(cl), topics: topics, apply: apply, cancel: cancel, done: make(chan struct{})}
	f.mu.read = NewProgress()
	f.mu.changed = make(chan struct{})
	go f.run(ctx)
	return f
}

func (f *Follower) run(ctx context.Context) {
	defer close(f.done)
	for {
		fs := f.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var bad error
		fs.EachError(func(t string, p int32, err error) {
			bad = fmt.Errorf("fetch %s/%d: %w", t, p, err)
		})
		f.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			if !rec.Attrs.IsControl() {
				if err := f.apply(rec); err != nil {
					bad = fmt.Errorf("%s/%d offset %d: %w", rec.Topic, rec.Partition, rec.Offset, err)
				}
			}
			f.mu.read.Observe(rec)
		})
		if bad != nil {
			f.mu.err = bad
		}
		close(f.mu.changed)
		f.mu.changed = make(chan struct{})
		f.mu.Unlock()
	}
}

// Sync returns once every partition has been read up to the end offset it
// has when Sync is called: every record acknowledged to a writer before
// then has been applied, and every transaction still open below that end
// has committed or aborted. An error that wraps ctx's means the view could
// not be brought up to date before ctx ended.
//
// Known limit: a partition whose last records the log cleaner has removed
// (a tombstone or a transaction marker older than delete.retention.ms, in
// a segment rolled since) ends in an empty batch that no consumer is
// shown, and Sync waits for it until ctx ends. A topic that is written
// rarely avoids it with segments that roll by size only (schemas.Topic
// Config).
func (f *Follower) Sync(ctx context.Context) error {
	starts, ends, err := Bounds(ctx, f.adm, f.topics...)
	if err != nil {
		return err
	}
	for {
		f.mu.Lock()
		behind := f.mu.read.Behind(starts, ends)
		changed, lastErr := f.mu.changed, f.mu.err
		f.mu.Unlock()
		if len(behind) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-f.done:
			return errors.New("kafkaclient: follower closed")
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("not read to the end (%v still to read): %w; last error: %w", behind, ctx.Err(), lastErr)
			}
			return fmt.Errorf("not read to the end (%v still to read): %w", behind, ctx.Err())
		}
	}
}

// Close stops following and closes the client.
func (f *Follower) Close() {
	f.cancel()
	<-f.done
	f.cl.Close()
}
