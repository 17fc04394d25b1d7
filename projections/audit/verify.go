package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/transparency-dev/formats/log"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// VerifyConfig says which log to verify, against what.
type VerifyConfig struct {
	Conn     driver.Conn
	Database string
	Tenant   string
	// Store holds the checkpoints (the object-locked copies, which win
	// over the table's).
	Store objstore.Store
	// Verifier checks the checkpoints' signatures (VerifierKey).
	Verifier note.Verifier
	// Kafka, if set, makes the topic the source: its records of the
	// tenant, in order, are the leaves, compared with the table's.
	Kafka *kafkaclient.Config
}

// Report is what a verification found. Problems are in log order: the
// first names the first bad entry.
type Report struct {
	Tenant      string `json:"tenant"`
	Source      string `json:"source"` // "table" or "topic"
	Entries     int64  `json:"entries"`
	Checkpoints int    `json:"checkpoints_checked"`
	LatestSize  int64  `json:"latest_checkpoint_size"`
	// Uncovered entries follow the latest checkpoint: appended since (a
	// checkpoint follows within CheckpointEvery). Only the topic can
	// vouch for them until then.
	Uncovered int64    `json:"entries_after_latest_checkpoint"`
	FirstBad  int64    `json:"first_bad_entry"` // -1: none
	Problems  []string `json:"problems,omitempty"`
}

// OK reports whether nothing was wrong.
func (r Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) bad(idx int64, format string, a ...any) {
	if r.FirstBad < 0 || (idx >= 0 && idx < r.FirstBad) {
		r.FirstBad = idx
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
}

// checkpoint is a verified checkpoint.
type checkpoint struct {
	size int64
	root []byte
	key  string
}

// Checkpoints reads tenant's checkpoints: those the table lists, each
// read back from the store and its signature verified. A checkpoint
// whose stored copy is missing, differs from the table's, or does not
// verify is a problem; so are two of one size with different roots (a
// forked log).
func checkpoints(ctx context.Context, cfg VerifyConfig, r *Report) ([]checkpoint, error) {
	rows, err := cfg.Conn.Query(ctx, "SELECT size, note, object_key FROM `"+cfg.Database+"`.audit_checkpoints WHERE tenant = ? ORDER BY size, written_at", cfg.Tenant)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	type listed struct {
		size      uint64
		note, key string
	}
	var ls []listed
	for rows.Next() {
		var l listed
		if err := rows.Scan(&l.size, &l.note, &l.key); err != nil {
			rows.Close()
			return nil, err
		}
		ls = append(ls, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []checkpoint
	for _, l := range ls {
		signed := []byte(l.note)
		if cfg.Store != nil {
			rc, _, err := cfg.Store.Get(ctx, l.key)
			if err != nil {
				r.bad(int64(l.size)-1, "checkpoint of size %d: its stored copy %s cannot be read: %v", l.size, l.key, err)
				continue
			}
			stored, err := io.ReadAll(io.LimitReader(rc, 64<<10))
			rc.Close()
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(stored, signed) {
				r.bad(int64(l.size)-1, "checkpoint of size %d: the table's copy differs from the stored one (%s): the stored one is checked", l.size, l.key)
				signed = stored
			}
		}
		cp, _, _, err := log.ParseCheckpoint(signed, Origin(cfg.Tenant), cfg.Verifier)
		if err != nil {
			r.bad(int64(l.size)-1, "checkpoint of size %d (%s) does not verify: %v", l.size, l.key, err)
			continue
		}
		if cp.Size != l.size {
			r.bad(int64(l.size)-1, "checkpoint %s says size %d, listed as %d", l.key, cp.Size, l.size)
			continue
		}
		c := checkpoint{size: int64(cp.Size), root: cp.Hash, key: l.key}
		for _, o := range out {
			if o.size == c.size && !bytes.Equal(o.root, c.root) {
				r.bad(c.size-1, "forked log: two signed checkpoints of size %d with different roots (%s, %s)", c.size, o.key, c.key)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// Verify recomputes tenant's tree from the table (or the topic, with
// Kafka set) and checks every entry and every checkpoint.
//
// From the table: entries must be numbered 0, 1, 2... with none missing
// or twice; each entry's stored hashes must be those its leaf makes, and
// its columns those its leaf says; at each checkpoint's size the root
// must be the signed one. From the topic: the tenant's records, in
// order, must be the table's leaves, one for one, and make the signed
// roots.
func Verify(ctx context.Context, cfg VerifyConfig) (Report, error) {
	r := Report{Tenant: cfg.Tenant, Source: "table", FirstBad: -1}
	cps, err := checkpoints(ctx, cfg, &r)
	if err != nil {
		return r, err
	}
	r.Checkpoints = len(cps)
	if len(cps) > 0 {
		r.LatestSize = cps[len(cps)-1].size
	}
	t := newTree()
	reach := reacher(&r, cps, t)
	leaves := map[int64][]byte{} // the table's, for the topic's comparison
	rows, err := cfg.Conn.Query(ctx, "SELECT idx, leaf, hashes, event_id, occurred_at, action, actor_subject, actor_role, target_type, target_id, call_id, result, reason, source_address "+
		"FROM `"+cfg.Database+"`.audit_log WHERE tenant = ? ORDER BY idx", cfg.Tenant)
	if err != nil {
		return r, fmt.Errorf("audit: read the log: %w", err)
	}
	var tableSize int64
	gap := false
	for rows.Next() {
		var idx uint64
		var leaf string
		var hs []string
		var c columns
		if err := rows.Scan(&idx, &leaf, &hs, &c.eventID, &c.occurredAt, &c.action, &c.actorSubject, &c.actorRole, &c.targetType, &c.targetID,
			&c.callID, &c.result, &c.reason, &c.source); err != nil {
			rows.Close()
			return r, err
		}
		tableSize++
		if _, seen := leaves[int64(idx)]; !seen {
			leaves[int64(idx)] = []byte(leaf)
		}
		switch {
		case gap:
			continue // nothing after a gap can match the signed trees
		case int64(idx) < t.size:
			r.bad(int64(idx), "entry %d appears again after entry %d (inserted, or reordered)", idx, t.size-1)
			continue
		case int64(idx) > t.size:
			r.bad(t.size, "entries %d to %d are missing (deleted)", t.size, idx-1)
			gap = true
			continue
		}
		stored, err := t.append([]byte(leaf))
		if err != nil {
			rows.Close()
			return r, err
		}
		if !sameHashes(stored, hs) {
			r.bad(int64(idx), "entry %d: its stored hashes are not those of its leaf (the leaf or the hashes were changed)", idx)
		}
		ev := &verbatimv1.AuditEvent{}
		var want columns
		if err := proto.Unmarshal([]byte(leaf), ev); err == nil && ev.GetEventId() != "" {
			want = columnsOf(ev)
		} else {
			want = columnsOf(nil)
		}
		if d := differs(c, want); d != "" {
			r.bad(int64(idx), "entry %d: column %s differs from what its leaf says (the row was changed)", idx, d)
		}
		reach.check()
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Entries = tableSize
	r.Uncovered = max(0, tableSize-r.LatestSize)
	if !gap {
		reach.rest(t.size)
	}
	if cfg.Kafka != nil {
		r.Source = "table and topic"
		onTopic := newTree()
		reachTopic := reacher(&r, cps, onTopic)
		if err := verifyTopic(ctx, cfg, &r, onTopic, leaves, reachTopic); err != nil {
			return r, err
		}
		reachTopic.rest(onTopic.size)
		if onTopic.size < tableSize {
			r.bad(onTopic.size, "the table has %d entries, the topic %d: entries %d on are not on the topic (inserted)", tableSize, onTopic.size, onTopic.size)
		}
	}
	r.Problems = dedupe(r.Problems)
	return r, nil
}

// reachFunc checks, each time its tree grows (check), the checkpoints
// of its size, and at its end (rest) those it never reached.
type reachFunc struct {
	check func()
	rest  func(size int64)
}

// reacher returns the check of cps against t as t grows.
func reacher(r *Report, cps []checkpoint, t *tree) reachFunc {
	next := 0
	check := func() {
		for next < len(cps) && cps[next].size <= t.size {
			if cps[next].size == t.size {
				root, err := t.root()
				if err == nil && !bytes.Equal(root[:], cps[next].root) {
					r.bad(t.size-1, "the tree of size %d differs from its signed checkpoint (%s): the log was changed at or before entry %d", t.size, cps[next].key, t.size-1)
				}
			}
			next++
		}
	}
	rest := func(size int64) {
		for ; next < len(cps); next++ {
			r.bad(size, "a signed checkpoint of size %d, but the log has %d entries: entries %d on were deleted", cps[next].size, size, size)
		}
	}
	return reachFunc{check: check, rest: rest}
}

// verifyTopic appends the tenant's records of the audit topic, compared
// with the table's leaves.
func verifyTopic(ctx context.Context, cfg VerifyConfig, r *Report, t *tree, leaves map[int64][]byte, reach reachFunc) error {
	cl, err := kafkaclient.New(*cfg.Kafka, kgo.ConsumeTopics(schemas.TopicAudit), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	starts, ends, err := kafkaclient.Bounds(ctx, kadm.NewClient(cl), schemas.TopicAudit)
	if err != nil {
		return err
	}
	progress := kafkaclient.NewProgress()
	for !progress.Reached(starts, ends) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("audit: read the topic: %w", err)
		}
		var ferr error
		fs.EachError(func(tp string, p int32, err error) { ferr = fmt.Errorf("audit: fetch %s/%d: %w", tp, p, err) })
		if ferr != nil {
			return ferr
		}
		for _, rec := range fs.Records() {
			progress.Observe(rec)
			if rec.Attrs.IsControl() || recordTenant(rec) != cfg.Tenant {
				continue
			}
			idx := t.size
			if _, err := t.append(rec.Value); err != nil {
				return err
			}
			if leaf, ok := leaves[idx]; !ok {
				r.bad(idx, "entry %d: on the topic (partition %d offset %d), not in the table", idx, rec.Partition, rec.Offset)
			} else if !bytes.Equal(leaf, rec.Value) {
				r.bad(idx, "entry %d: the topic's record (partition %d offset %d) differs from the table's leaf", idx, rec.Partition, rec.Offset)
			}
			reach.check()
		}
	}
	return nil
}

// dedupe drops repeated problems (the table and the topic may both find
// one), keeping the order.
func dedupe(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func sameHashes(a []tlog.Hash, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i][:]) != b[i] {
			return false
		}
	}
	return true
}

// differs names the first column of got that is not want's.
func differs(got, want columns) string {
	for _, c := range []struct {
		name      string
		got, want string
	}{
		{"event_id", got.eventID, want.eventID}, {"action", got.action, want.action}, {"actor_subject", got.actorSubject, want.actorSubject},
		{"actor_role", got.actorRole, want.actorRole}, {"target_type", got.targetType, want.targetType}, {"target_id", got.targetID, want.targetID}, {"call_id", got.callID, want.callID},
		{"result", got.result, want.result}, {"reason", got.reason, want.reason}, {"source_address", got.source, want.source},
	} {
		if c.got != c.want {
			return c.name
		}
	}
	if !got.occurredAt.Equal(want.occurredAt) {
		return "occurred_at"
	}
	return ""
}
