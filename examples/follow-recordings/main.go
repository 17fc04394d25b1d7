// Command follow-recordings is an example consumer of Verbatim's topics for
// downstream teams: it reads verbatim.recordings.v1 from an offset, checks
// each record's envelope (headers), decodes the event its type names and
// prints each recording with its completeness label and per-stream ledger.
// A recording rebuilt later (reprocessed) is a new RecordingStored of the
// same call: follow the topic, keep the newest per call.
//
//	go run ./examples/follow-recordings --brokers 127.0.0.1:19092 --from start
//
// It is a plain franz-go consumer without a group: it reads every
// partition from --from (start, end, or an offset) and stops at the end
// offsets it found when it started (--follow: keeps going).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "follow-recordings:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("follow-recordings", flag.ContinueOnError)
	brokers := fs.String("brokers", "127.0.0.1:19092", "Kafka seed brokers, comma separated")
	from := fs.String("from", "start", "where to start on every partition: start, end, or an offset")
	follow := fs.Bool("follow", false, "keep reading new records (default: stop at the end offsets of the start)")
	tenant := fs.String("tenant", "", "only this tenant's recordings")
	if err := fs.Parse(args); err != nil {
		return err
	}
	offset := kgo.NewOffset().AtStart()
	var at int64 // the first offset read, for a numeric --from
	switch *from {
	case "start":
	case "end":
		offset = kgo.NewOffset().AtEnd()
	default:
		n, err := strconv.ParseInt(*from, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("--from %q: start, end or an offset", *from)
		}
		offset, at = kgo.NewOffset().At(n), n
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.ConsumeTopics(schemas.TopicRecordings),
		kgo.ConsumeResetOffset(offset), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The processor writes in transactions: a partition often ends in
		// a commit marker, delivered so that its end offset is reached.
		kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	// Where to stop: the end offsets now (the records committed so far).
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, schemas.TopicRecordings)
	if err != nil {
		return err
	}
	remaining := map[int32]int64{}
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, schemas.TopicRecordings)
	if err != nil {
		return err
	}
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset > max(s.Offset, at) && *from != "end" {
			remaining[o.Partition] = o.Offset
		}
	})
	for *follow || len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = errors.Join(ferr, fmt.Errorf("%s/%d: %w", t, p, err)) })
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
			if !r.Attrs.IsControl() { // a transaction's commit marker
				printRecord(out, r, *tenant)
			}
		})
	}
	return nil
}

// printRecord prints one record of the recordings topic.
func printRecord(out io.Writer, r *kgo.Record, tenant string) {
	env, err := schemas.ParseHeaders(r.Headers)
	if err != nil {
		fmt.Fprintf(out, "partition %d offset %d: not a Verbatim record: %v\n", r.Partition, r.Offset, err)
		return
	}
	if tenant != "" && env.Tenant != tenant {
		return
	}
	where := fmt.Sprintf("%d/%d %s %s", r.Partition, r.Offset, env.OccurredAt.UTC().Format("2006-01-02T15:04:05Z"), env.Tenant)
	switch env.Type {
	case "verbatim.v1.RecordingStored":
		var ev verbatimv1.RecordingStored
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			fmt.Fprintf(out, "%s: bad RecordingStored: %v\n", where, err)
			return
		}
		fmt.Fprintf(out, "%s stored   call %s recording %s: %s, %s, %s\n", where, ev.GetCallId(), ev.GetRecordingId(),
			ev.GetFormat(), ev.GetDuration().AsDuration(), schemas.Summarize(ev.GetLedgers()))
		if s := ev.GetSupersedes(); s != nil {
			// Reprocessed: this is now the call's recording; the one it
			// names stays stored as its retention says.
			fmt.Fprintf(out, "    supersedes %s (generation %d, job %s): %s\n", s.GetRecordingId(), s.GetGeneration(), s.GetJob(), s.GetReason())
		}
		for _, l := range ev.GetLedgers() {
			fmt.Fprintf(out, "    stream %s: %d captured, %d recorded\n", l.GetStreamId(), l.GetCaptured(), l.GetRecorded())
		}
	case "verbatim.v1.RecordingFailed":
		var ev verbatimv1.RecordingFailed
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			fmt.Fprintf(out, "%s: bad RecordingFailed: %v\n", where, err)
			return
		}
		fmt.Fprintf(out, "%s FAILED   call %s: %s (raw media kept at %s)\n", where, ev.GetCallId(), ev.GetReason(), ev.GetRawObjectKey())
	case "verbatim.v1.RecordingDeleted":
		var ev verbatimv1.RecordingDeleted
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			fmt.Fprintf(out, "%s: bad RecordingDeleted: %v\n", where, err)
			return
		}
		fmt.Fprintf(out, "%s deleted  call %s recording %s: %v\n", where, ev.GetCallId(), ev.GetRecordingId(), ev.GetReason())
	default:
		fmt.Fprintf(out, "%s %s (not a recording event)\n", where, env.Type)
	}
}
