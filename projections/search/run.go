package search

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/schemas"
)

// Topics the search projection consumes.
func Topics() []string {
	return []string{schemas.TopicKeys, schemas.TopicCalls, schemas.TopicMetadata, schemas.TopicRecordings}
}

// RunConfig configures the projection's consumer loop.
type RunConfig struct {
	// Client consumes Topics() in a consumer group with auto-commit
	// disabled. Required.
	Client *kgo.Client
	// Projector applies the records. Required.
	Projector *Projector
	// KeyWait bounds how long records wait for a data key still missing
	// (it may be on a partition not fetched yet). Default 30 s.
	KeyWait time.Duration
	// IdleExit, if positive, returns nil once no record has arrived for
	// this long after the first one (or, on empty topics, after
	// max(IdleExit, 30 s), which also covers a slow group join): for
	// catch-up runs and demos.
	IdleExit time.Duration
	// Logger, default discard.
	Logger *slog.Logger
}

// Run projects until ctx ends (or the topics stay idle for IdleExit). It
// commits offsets only after their rows are inserted (ack, then commit), so
// a crash replays some records, which the versioned rows absorb.
func Run(ctx context.Context, cfg RunConfig) (projected int, err error) {
	if cfg.Client == nil || cfg.Projector == nil {
		return 0, errors.New("search: client and projector are required")
	}
	if cfg.KeyWait <= 0 {
		cfg.KeyWait = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var pending []*kgo.Record
	var waitingSince time.Time
	// The idle clock starts at the first record: joining the group and the
	// first fetch can take longer than IdleExit.
	var lastRecord time.Time
	started := time.Now()
	for {
		pctx := ctx
		var cancel context.CancelFunc = func() {}
		if cfg.IdleExit > 0 {
			pctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fs := cfg.Client.PollRecords(pctx, 5000)
		cancel()
		if ctx.Err() != nil {
			return projected, nil
		}
		var fetchErr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && fetchErr == nil {
				fetchErr = fmt.Errorf("search: fetch %s/%d: %w", t, p, err)
			}
		})
		if fetchErr != nil {
			return projected, fetchErr
		}
		recs := fs.Records()
		if len(recs) > 0 {
			lastRecord = time.Now()
		} else if len(pending) == 0 && cfg.IdleExit > 0 && idle(lastRecord, started, cfg.IdleExit) {
			return projected, nil
		}
		pending = append(pending, recs...)
		if len(pending) == 0 {
			continue
		}
		err := cfg.Projector.Apply(ctx, pending)
		switch {
		case errors.Is(err, ErrKeyMissing):
			// Applying again is safe: keep the batch and fetch more.
			if waitingSince.IsZero() {
				waitingSince = time.Now()
			}
			if time.Since(waitingSince) > cfg.KeyWait {
				return projected, fmt.Errorf("%w (waited %v)", err, cfg.KeyWait)
			}
			continue
		case err != nil:
			return projected, err
		}
		if err := cfg.Client.CommitRecords(ctx, pending...); err != nil {
			return projected, fmt.Errorf("search: commit: %w", err)
		}
		projected += len(pending)
		cfg.Logger.Debug("projected", "records", len(pending))
		pending, waitingSince = pending[:0], time.Time{}
	}
}

func idle(lastRecord, started time.Time, after time.Duration) bool {
	if lastRecord.IsZero() {
		return time.Since(started) >= max(after, 30*time.Second)
	}
	return time.Since(lastRecord) >= after
}
