package kafkaclient

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// "Caught up" in Verbatim is an end offset reached, never a quiet poll: a
// poll that returns nothing proves nothing (the leader may not be known
// yet, a fetch may be in flight, a transaction may hold records back). The
// helpers here decide it from offsets the broker lists.
//
// A read-committed consumer never delivers the transaction markers that
// end a transactional producer's writes, so a partition whose last offset
// is a marker would never look read to its end. Consumers that follow
// their position with a Progress therefore use kgo.KeepControlRecords and
// skip control records themselves (IsControl).

// retryEvery paces the listing of offsets again after a broker answered
// with an error (a topic just created whose partitions have no leader yet,
// a leader moving). It is a back-off between requests, not a wait that
// decides anything.
const retryEvery = 100 * time.Millisecond

// Bounds lists the start and end offsets of every partition of topics. A
// partition that fails to list (its leader not yet known, a topic just
// created) is listed again until it answers or ctx ends: a partition left
// out would be a partition nobody waits for.
func Bounds(ctx context.Context, adm *kadm.Client, topics ...string) (starts, ends kadm.ListedOffsets, err error) {
	for {
		starts, err = adm.ListStartOffsets(ctx, topics...)
		if err == nil {
			err = starts.Error()
		}
		if err == nil {
			ends, err = adm.ListEndOffsets(ctx, topics...)
			if err == nil {
				err = ends.Error()
			}
		}
		if err == nil {
			return starts, ends, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("kafkaclient: list offsets of %v: %w (last error: %w)", topics, ctx.Err(), err)
		case <-time.After(retryEvery):
		}
	}
}

type topicPartition struct {
	topic     string
	partition int32
}

// Progress is how far a consumer has read: per partition, the offset after
// the last record it delivered, data or control. The zero value is not
// usable; NewProgress makes one. Not safe for concurrent use.
type Progress struct {
	next map[topicPartition]int64
}

// NewProgress returns a Progress that has seen nothing.
func NewProgress() *Progress { return &Progress{next: map[topicPartition]int64{}} }

// Observe notes that r was delivered.
func (p *Progress) Observe(r *kgo.Record) {
	k := topicPartition{r.Topic, r.Partition}
	if r.Offset+1 > p.next[k] {
		p.next[k] = r.Offset + 1
	}
}

// Reached reports whether every partition has been read to its end in
// ends. A partition with nothing readable (its end at or below its start:
// empty, or emptied by retention) needs no record to be reached.
func (p *Progress) Reached(starts, ends kadm.ListedOffsets) bool {
	return len(p.Behind(starts, ends)) == 0
}

// Behind returns the partitions not yet read to their end, "topic/N" to
// the end offset still to reach.
func (p *Progress) Behind(starts, ends kadm.ListedOffsets) map[string]int64 {
	behind := map[string]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		start := int64(0)
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			start = s.Offset
		}
		if e.Offset <= start {
			return
		}
		if p.next[topicPartition{e.Topic, e.Partition}] < e.Offset {
			behind[fmt.Sprintf("%s/%d", e.Topic, e.Partition)] = e.Offset
		}
	})
	return behind
}

// GroupCaughtUp reports whether group has committed, for every partition
// of topics, an offset at the partition's end (or the partition has
// nothing readable). Only a group whose members consume with
// kgo.KeepControlRecords commits past a trailing transaction marker; a
// group that does not is never caught up on such a partition. The
// partitions not yet caught up are returned, "topic/N" to their end.
func GroupCaughtUp(ctx context.Context, adm *kadm.Client, group string, topics ...string) (map[string]int64, error) {
	read, starts, ends, err := groupProgress(ctx, adm, group, topics...)
	if err != nil {
		return nil, err
	}
	return read.Behind(starts, ends), nil
}

// GroupRemaining returns how many offsets group has still to read to the
// end of topics, summed over their partitions (transaction markers
// included: an estimate of records, for progress reports).
func GroupRemaining(ctx context.Context, adm *kadm.Client, group string, topics ...string) (int64, error) {
	read, starts, ends, err := groupProgress(ctx, adm, group, topics...)
	if err != nil {
		return 0, err
	}
	var n int64
	ends.Each(func(e kadm.ListedOffset) {
		from := read.next[topicPartition{e.Topic, e.Partition}]
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			from = max(from, s.Offset)
		}
		n += max(0, e.Offset-from)
	})
	return n, nil
}

// groupProgress is what group has committed on topics, with the topics'
// bounds.
func groupProgress(ctx context.Context, adm *kadm.Client, group string, topics ...string) (*Progress, kadm.ListedOffsets, kadm.ListedOffsets, error) {
	starts, ends, err := Bounds(ctx, adm, topics...)
	if err != nil {
		return nil, nil, nil, err
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, group, topics...)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kafkaclient: committed offsets of %s: %w", group, err)
	}
	if err := committed.Error(); err != nil {
		return nil, nil, nil, fmt.Errorf("kafkaclient: committed offsets of %s: %w", group, err)
	}
	read := NewProgress()
	committed.Each(func(o kadm.OffsetResponse) {
		if o.At > 0 {
			read.next[topicPartition{o.Topic, o.Partition}] = o.At
		}
	})
	return read, starts, ends, nil
}
