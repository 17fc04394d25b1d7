package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/transparency-dev/formats/log"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// KeyName names the checkpoints' signing key in signed notes; a tenant's
// log is the origin KeyName + "/" + tenant.
const KeyName = "verbatim-audit"

// Origin is the origin line of tenant's checkpoints.
func Origin(tenant string) string { return KeyName + "/" + tenant }

// Config configures the audit projection.
type Config struct {
	Kafka kafkaclient.Config
	// Conn and Database: the ClickHouse database (search.Migrate makes
	// its audit tables).
	Conn     driver.Conn
	Database string
	// Signer signs checkpoints: the key manager's audit key.
	Signer keys.AuditSigner
	// Store keeps the checkpoints, locked for Retention.
	Store     objstore.Store
	Retention time.Duration
	// CheckpointEvery: a tenant whose log grew gets a checkpoint at
	// least this often (default 60 s), and one when the run ends.
	CheckpointEvery time.Duration
	// ExitWhenIdle ends the run once the topic is read to the end
	// offsets it had at the start.
	ExitWhenIdle bool
	Logger       *slog.Logger
}

// Stats says what a run appended.
type Stats struct {
	Appended    int
	Checkpoints int
	Tenants     int
}

// maxAppend bounds the entries of one insert: ClickHouse writes a block
// of up to a million rows as one part, so one insert is all or nothing.
const maxAppend = 10000

// Appender appends audit records to the tenants' logs.
type Appender struct {
	cfg    Config
	trees  map[string]*tree
	signer note.Signer
	// pending are the tenants whose logs grew since their last
	// checkpoint, with when they first did.
	pending map[string]time.Time
	// next is the offset to read next, per partition (from the table).
	next map[int32]int64
}

// noteSigner signs notes with the key manager's audit key.
type noteSigner struct {
	ctx  context.Context
	s    keys.AuditSigner
	hash uint32
	pub  ed25519.PublicKey
}

func (n *noteSigner) Name() string    { return KeyName }
func (n *noteSigner) KeyHash() uint32 { return n.hash }
func (n *noteSigner) Sign(msg []byte) ([]byte, error) {
	sig, err := n.s.SignAudit(n.ctx, msg)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(n.pub, msg, sig) { // a rotated key, or a wrong one: never write a checkpoint nobody can verify
		return nil, errors.New("audit: the key manager's signature does not verify with its public key (was the key rotated? restart to take the new one)")
	}
	return sig, nil
}

// VerifierKey is the signed-note verifier key of the checkpoints
// ("verbatim-audit+HASH+KEY"): what an auditor needs to check them.
func VerifierKey(ctx context.Context, s keys.AuditSigner) (string, error) {
	pub, err := s.AuditPublicKey(ctx)
	if err != nil {
		return "", err
	}
	return note.NewEd25519VerifierKey(KeyName, pub)
}

// NoteSigner signs notes (checkpoints) with the key manager's audit key,
// under KeyName; each signature is checked against the public key before
// it is used.
func NoteSigner(ctx context.Context, s keys.AuditSigner) (note.Signer, error) {
	pub, err := s.AuditPublicKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	vkey, err := note.NewEd25519VerifierKey(KeyName, pub)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	return &noteSigner{ctx: context.WithoutCancel(ctx), s: s, hash: v.KeyHash(), pub: pub}, nil
}

// NewAppender loads the logs' state from the table: each tenant's size
// and peaks, and where to read each partition from.
func NewAppender(ctx context.Context, cfg Config) (*Appender, error) {
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = time.Minute
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 10 * 365 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := search.ValidDatabase(cfg.Database); err != nil {
		return nil, err
	}
	signer, err := NoteSigner(ctx, cfg.Signer)
	if err != nil {
		return nil, err
	}
	a := &Appender{cfg: cfg, trees: map[string]*tree{}, pending: map[string]time.Time{}, next: map[int32]int64{}, signer: signer}
	db := "`" + cfg.Database + "`"
	rows, err := cfg.Conn.Query(ctx, "SELECT tenant, max(idx) + 1, count() FROM "+db+".audit_log GROUP BY tenant")
	if err != nil {
		return nil, fmt.Errorf("audit: read the logs' sizes: %w", err)
	}
	sizes := map[string]int64{}
	for rows.Next() {
		var tenant string
		var size, n uint64
		if err := rows.Scan(&tenant, &size, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if size != n {
			rows.Close()
			return nil, fmt.Errorf("audit: tenant %s's log has %d entries but ends at %d: the table was changed (run verbatim audit verify)", tenant, n, size)
		}
		sizes[tenant] = int64(size)
	}
	rows.Close()
	for tenant, size := range sizes {
		t, err := loadTree(ctx, cfg.Conn, cfg.Database, tenant, size)
		if err != nil {
			return nil, err
		}
		a.trees[tenant] = t
	}
	rows, err = cfg.Conn.Query(ctx, "SELECT kafka_partition, max(kafka_offset) FROM "+db+".audit_log GROUP BY kafka_partition")
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			rows.Close()
			return nil, err
		}
		a.next[p] = o + 1
	}
	rows.Close()
	return a, rows.Err()
}

// loadTree reads the peaks of tenant's log of size n.
func loadTree(ctx context.Context, conn driver.Conn, db, tenant string, n int64) (*tree, error) {
	t := &tree{size: n, hashes: map[int64]tlog.Hash{}}
	hashes, err := readStoredHashes(ctx, conn, db, tenant, peaks(n))
	if err != nil {
		return nil, err
	}
	for i, x := range peaks(n) {
		t.hashes[x] = hashes[i]
	}
	return t, nil
}

// readStoredHashes reads the stored hashes at indexes from the entries
// that made them.
func readStoredHashes(ctx context.Context, conn driver.Conn, db, tenant string, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	records := map[int64]bool{}
	var args []any
	args = append(args, tenant)
	for _, x := range indexes {
		r, _ := storedAt(x)
		if !records[r] {
			records[r] = true
			args = append(args, uint64(r))
		}
	}
	ph := strings.TrimSuffix(strings.Repeat("?,", len(args)-1), ",")
	rows, err := conn.Query(ctx, "SELECT idx, hashes FROM `"+db+"`.audit_log WHERE tenant = ? AND idx IN ("+ph+")", args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read stored hashes: %w", err)
	}
	defer rows.Close()
	byRecord := map[int64][]string{}
	for rows.Next() {
		var idx uint64
		var hs []string
		if err := rows.Scan(&idx, &hs); err != nil {
			return nil, err
		}
		if _, dup := byRecord[int64(idx)]; dup {
			return nil, fmt.Errorf("audit: tenant %s's entry %d appears twice: the table was changed (run verbatim audit verify)", tenant, idx)
		}
		byRecord[int64(idx)] = hs
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		r, level := storedAt(x)
		hs, ok := byRecord[r]
		if !ok || level >= len(hs) || len(hs[level]) != tlog.HashSize {
			return nil, fmt.Errorf("audit: tenant %s's entry %d lacks stored hash %d: the table was changed (run verbatim audit verify)", tenant, r, x)
		}
		copy(out[i][:], hs[level])
	}
	return out, nil
}

// entry is one appended record, as its row.
type entry struct {
	tenant string
	idx    int64
	leaf   []byte
	hashes []tlog.Hash
	ev     *verbatimv1.AuditEvent // nil: the record is not an AuditEvent (kept, named)
	rec    *kgo.Record
}

// recordTenant is the tenant whose log a record joins: its key (the
// topic is keyed by tenant), else "_invalid".
func recordTenant(r *kgo.Record) string {
	t := string(r.Key)
	if t == "" || len(t) > 64 || strings.ContainsAny(t, "/\x00\n") {
		return "_invalid"
	}
	return t
}

// Append appends records (in topic order) to their tenants' logs and
// inserts the entries, all or none; records read before (offsets below
// where the table ends) are skipped: a replay appends nothing twice.
func (a *Appender) Append(ctx context.Context, recs []*kgo.Record) (int, error) {
	var es []entry
	trees := map[string]*tree{} // copies: the logs change only once the insert succeeded
	for _, r := range recs {
		if r.Attrs.IsControl() || r.Offset < a.next[r.Partition] {
			continue
		}
		tenant := recordTenant(r)
		t := trees[tenant]
		if t == nil {
			t = newTree()
			if old := a.trees[tenant]; old != nil {
				t.size, t.hashes = old.size, maps.Clone(old.hashes)
			}
			trees[tenant] = t
		}
		e := entry{tenant: tenant, idx: t.size, leaf: r.Value, rec: r}
		var err error
		if e.hashes, err = t.append(r.Value); err != nil {
			return 0, err
		}
		ev := &verbatimv1.AuditEvent{}
		if err := proto.Unmarshal(r.Value, ev); err == nil && ev.GetEventId() != "" {
			e.ev = ev
		} else {
			a.cfg.Logger.Error("an audit record that is not an AuditEvent: appended as it is, named malformed", "partition", r.Partition, "offset", r.Offset)
		}
		es = append(es, e)
	}
	for start := 0; start < len(es); start += maxAppend {
		end := min(start+maxAppend, len(es))
		if err := a.insert(ctx, es[start:end]); err != nil {
			return 0, err
		}
	}
	for tenant, t := range trees {
		a.trees[tenant] = t
		if _, ok := a.pending[tenant]; !ok {
			a.pending[tenant] = time.Now()
		}
	}
	for _, e := range es {
		a.next[e.rec.Partition] = e.rec.Offset + 1
	}
	return len(es), nil
}

func (a *Appender) insert(ctx context.Context, es []entry) error {
	b, err := a.cfg.Conn.PrepareBatch(ctx, "INSERT INTO `"+a.cfg.Database+"`.audit_log (tenant, idx, leaf, hashes, event_id, occurred_at, action, "+
		"actor_subject, actor_role, target_type, target_id, call_id, result, reason, source_address, kafka_partition, kafka_offset, appended_at)")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	now := time.Now()
	for _, e := range es {
		hs := make([]string, len(e.hashes))
		for i, h := range e.hashes {
			hs[i] = string(h[:])
		}
		c := columnsOf(e.ev)
		if err := b.Append(e.tenant, uint64(e.idx), string(e.leaf), hs, c.eventID, c.occurredAt, c.action, c.actorSubject, c.actorRole,
			c.targetType, c.targetID, c.callID, c.result, c.reason, c.source, e.rec.Partition, e.rec.Offset, now); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("audit: insert %d entries: %w", len(es), err)
	}
	return nil
}

// columns are the fields of an event a query filters on.
type columns struct {
	eventID, action, actorSubject, actorRole, targetType, targetID, callID, result, reason, source string
	occurredAt                                                                                     time.Time
}

// columnsOf are ev's columns, all from the leaf (so that verify can
// check them): the call is the event's, else the recording's, else the
// target when it is a call; nil (a malformed record): action "malformed".
func columnsOf(ev *verbatimv1.AuditEvent) columns {
	if ev == nil {
		return columns{action: "malformed", occurredAt: time.Unix(0, 0).UTC()}
	}
	callID := ev.GetCallId()
	if callID == "" {
		callID = ev.GetRecording().GetCallId()
	}
	if callID == "" && ev.GetTarget().GetType() == "call" {
		callID = ev.GetTarget().GetId()
	}
	return columns{callID: callID, eventID: ev.GetEventId(), action: ev.GetAction(), actorSubject: ev.GetActor().GetSubject(), actorRole: ev.GetActor().GetRole(),
		targetType: ev.GetTarget().GetType(), targetID: ev.GetTarget().GetId(), result: strings.TrimPrefix(ev.GetResult().String(), "AUDIT_RESULT_"),
		reason: ev.GetReason(), source: ev.GetSourceAddress(), occurredAt: ev.GetOccurredAt().AsTime().UTC().Truncate(time.Second)}
}

// Checkpoint signs and writes a checkpoint of every tenant whose log grew
// since its last, if its first growth is older than CheckpointEvery (all
// of them if force).
func (a *Appender) Checkpoint(ctx context.Context, force bool) (int, error) {
	n := 0
	tenants := slices.Sorted(maps.Keys(a.pending))
	for _, tenant := range tenants {
		if !force && time.Since(a.pending[tenant]) < a.cfg.CheckpointEvery {
			continue
		}
		t := a.trees[tenant]
		root, err := t.root()
		if err != nil {
			return n, err
		}
		body := log.Checkpoint{Origin: Origin(tenant), Size: uint64(t.size), Hash: root[:]}.Marshal()
		signed, err := note.Sign(&note.Note{Text: string(body)}, a.signer)
		if err != nil {
			return n, fmt.Errorf("audit: sign the checkpoint of %s: %w", tenant, err)
		}
		key := CheckpointKey(tenant, t.size)
		if _, err := a.cfg.Store.Put(ctx, key, bytes.NewReader(signed), int64(len(signed)),
			objstore.PutOptions{RetainUntil: time.Now().Add(a.cfg.Retention), ContentType: "text/plain; charset=utf-8"}); err != nil {
			if !errors.Is(err, objstore.ErrRetained) {
				return n, fmt.Errorf("audit: store the checkpoint of %s: %w", tenant, err)
			}
			// A checkpoint of this size is stored already (a run that
			// ended before recording it below): the same tree, kept.
		}
		b, err := a.cfg.Conn.PrepareBatch(ctx, "INSERT INTO `"+a.cfg.Database+"`.audit_checkpoints (tenant, size, root, note, object_key, written_at)")
		if err == nil {
			err = b.Append(tenant, uint64(t.size), string(root[:]), string(signed), key, time.Now())
		}
		if err == nil {
			err = b.Send()
		}
		if err != nil {
			return n, fmt.Errorf("audit: record the checkpoint of %s: %w", tenant, err)
		}
		delete(a.pending, tenant)
		n++
	}
	return n, nil
}

// CheckpointKey is where the checkpoint of tenant's log at size is kept.
func CheckpointKey(tenant string, size int64) string {
	return fmt.Sprintf("audit/%s/checkpoints/%020d", tenant, size)
}

// Run appends the audit topic to the logs until ctx ends (or, with
// ExitWhenIdle, until it has read to the end offsets of its start), and
// writes checkpoints.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	a, err := NewAppender(ctx, cfg)
	if err != nil {
		return Stats{}, err
	}
	setup, err := kafkaclient.New(cfg.Kafka)
	if err != nil {
		return Stats{}, err
	}
	starts, ends, err := kafkaclient.Bounds(ctx, kadm.NewClient(setup), schemas.TopicAudit)
	setup.Close()
	if err != nil {
		return Stats{}, err
	}
	var ahead error
	ends.Each(func(e kadm.ListedOffset) {
		if next, ok := a.next[e.Partition]; ok && next > e.Offset {
			ahead = fmt.Errorf("audit: the log in database %s has read partition %d of %s to offset %d, but the topic ends at %d: it was built from another Kafka cluster, or the topic was deleted; build the log into a new database (nothing is appended here, so nothing is skipped)",
				cfg.Database, e.Partition, schemas.TopicAudit, next, e.Offset)
		}
	})
	if ahead != nil {
		return Stats{}, ahead
	}
	offsets := map[int32]kgo.Offset{}
	progress := kafkaclient.NewProgress()
	ends.Each(func(e kadm.ListedOffset) {
		if next, ok := a.next[e.Partition]; ok {
			offsets[e.Partition] = kgo.NewOffset().At(next)
			if next > 0 {
				progress.Observe(&kgo.Record{Topic: e.Topic, Partition: e.Partition, Offset: next - 1})
			}
		} else {
			offsets[e.Partition] = kgo.NewOffset().AtStart()
		}
	})
	cl, err := kafkaclient.New(cfg.Kafka, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicAudit: offsets}), kgo.KeepControlRecords())
	if err != nil {
		return Stats{}, err
	}
	defer cl.Close()
	var st Stats
	for {
		if cfg.ExitWhenIdle && progress.Reached(starts, ends) {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, a.cfg.CheckpointEvery/4)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			break
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("audit: fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return st, ferr
		}
		recs := fs.Records()
		n, err := a.Append(ctx, recs)
		if err != nil {
			return st, err
		}
		st.Appended += n
		for _, r := range recs {
			progress.Observe(r)
		}
		c, err := a.Checkpoint(ctx, false)
		st.Checkpoints += c
		if err != nil {
			return st, err
		}
	}
	c, err := a.Checkpoint(context.WithoutCancel(ctx), true)
	st.Checkpoints += c
	st.Tenants = len(a.trees)
	return st, err
}
