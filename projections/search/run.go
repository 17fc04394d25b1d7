package search

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/schemas"
)

// Topics the search projection consumes in its group. The keys topic is
// not one of them: data keys come from a key registry rebuilt from the
// start of that compacted topic on every start (keyreg), never through a
// committed group offset, which would forget every key read before a
// restart.
func Topics() []string {
	return []string{schemas.TopicCalls, schemas.TopicMetadata, schemas.TopicRecordings}
}

// RunConfig configures the projection's consumer loop.
type RunConfig struct {
	// Kafka says how to reach the brokers. Required.
	Kafka kafkaclient.Config
	// Group is the consumer group. Default "verbatim-project-search".
	Group string
	// Instance is the group's static member id, stable across restarts:
	// a projection started again after a crash gets its partitions back
	// at once instead of after the dead member's session timeout. It must
	// be unique in the group. Default: the host name.
	Instance string
	// Conn and Database are where the rows go (migrated). Required.
	Conn     driver.Conn
	Database string
	// Keys unwraps data keys. Required.
	Keys keys.Manager
	// ExitWhenCaughtUp returns once the group has committed, on every
	// partition of Topics(), an offset at the partition's end (listed after
	// a poll that brought nothing): everything written before then is
	// projected. For catch-up runs, tests and demos. Never decided by a
	// quiet period.
	ExitWhenCaughtUp bool
	// Progress, if set, is called about every ProgressEvery (default 5 s)
	// with the records projected so far and Stats.Behind.
	Progress      func(Stats)
	ProgressEvery time.Duration
	// Logger, default discard.
	Logger *slog.Logger
}

func (c *RunConfig) setDefaults() {
	if c.Group == "" {
		c.Group = "verbatim-project-search"
	}
	if c.Instance == "" {
		c.Instance, _ = os.Hostname()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports missing settings.
func (c RunConfig) Validate() error {
	var errs []error
	if c.Conn == nil || c.Database == "" {
		errs = append(errs, errors.New("search: a ClickHouse connection and database are required"))
	} else if err := ValidDatabase(c.Database); err != nil {
		errs = append(errs, err)
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("search: a key manager is required"))
	}
	if c.Instance == "" {
		errs = append(errs, errors.New("search: an instance name is required (no host name)"))
	}
	return errors.Join(c.Kafka.Validate(), errors.Join(errs...))
}

// Stats counts what a Run did.
type Stats struct {
	// Records is the number of records projected (transaction markers
	// not counted).
	Records int
	// Unreadable counts sealed values that could not be read (see
	// Projector.Unreadable).
	Unreadable int
	// Behind is how many offsets the group still had to read, summed over
	// the partitions, when Progress was last called.
	Behind int64
}

// Run projects until ctx ends (or, with ExitWhenCaughtUp, until the group
// has read every partition to its end). It commits offsets only after
// their rows are inserted (ack, then commit), so a crash replays some
// records, which the versioned rows absorb. A record whose sealed values
// cannot be read (its key missing, erased or refused) is projected without
// them and counted: one call, or one tenant, never stops the others.
func Run(ctx context.Context, cfg RunConfig) (Stats, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Stats{}, err
	}
	regCl, err := kafkaclient.New(cfg.Kafka, keyreg.ConsumeOpts()...)
	if err != nil {
		return Stats{}, err
	}
	reg := keyreg.Start(regCl)
	defer reg.Close()
	cl, err := kafkaclient.New(cfg.Kafka, kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(Topics()...),
		kgo.InstanceID(cfg.Instance), kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Markers are delivered (Apply skips them) and committed, so the
		// committed offset reaches a partition's end: ExitWhenCaughtUp.
		kgo.KeepControlRecords())
	if err != nil {
		return Stats{}, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	proj := NewProjector(cfg.Conn, cfg.Database, cfg.Keys, reg)
	var st Stats
	reported := time.Now()
	every := cfg.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	progress := func() {
		if cfg.Progress == nil || time.Since(reported) < every {
			return
		}
		reported = time.Now()
		if n, err := kafkaclient.GroupRemaining(ctx, adm, cfg.Group, Topics()...); err == nil {
			st.Behind = n
		}
		cfg.Progress(st)
	}
	for {
		progress()
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if cfg.ExitWhenCaughtUp {
			// The poll returns, empty, now and then so that the end
			// offsets can be compared; the timeout decides nothing.
			pctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fs := cl.PollRecords(pctx, 5000)
		cancel()
		st.Unreadable = proj.Unreadable
		if ctx.Err() != nil {
			return st, nil
		}
		var fetchErr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && fetchErr == nil {
				fetchErr = fmt.Errorf("search: fetch %s/%d: %w", t, p, err)
			}
		})
		if fetchErr != nil {
			return st, fetchErr
		}
		recs := fs.Records()
		if len(recs) == 0 {
			if cfg.ExitWhenCaughtUp {
				behind, err := kafkaclient.GroupCaughtUp(ctx, adm, cfg.Group, Topics()...)
				if err != nil {
					if ctx.Err() != nil {
						return st, nil
					}
					return st, fmt.Errorf("search: %w", err)
				}
				if len(behind) == 0 {
					return st, nil
				}
			}
			continue
		}
		if err := proj.Apply(ctx, recs); err != nil {
			if ctx.Err() != nil {
				return st, nil
			}
			return st, err
		}
		if err := cl.CommitRecords(ctx, recs...); err != nil {
			return st, fmt.Errorf("search: commit: %w", err)
		}
		for _, r := range recs {
			if !r.Attrs.IsControl() {
				st.Records++
			}
		}
		st.Unreadable = proj.Unreadable
		cfg.Logger.Debug("projected", "records", len(recs))
	}
}
