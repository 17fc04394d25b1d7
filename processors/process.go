package processors

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Config configures the recording processor (`verbatim process`).
type Config struct {
	// Kafka says how to reach the brokers. Required.
	Kafka kafkaclient.Config
	// Group is the consumer group. Default "verbatim-process".
	Group string
	// Instance names this processor: unique in the group and stable across
	// its restarts. It is the group's static member id, so a restarted
	// processor gets its partitions back at once instead of after the dead
	// one's session timeout, and its transactional id is
	// "verbatim-process-<Instance>", so the restart fences the dead one and
	// aborts its open transaction at once. Default: the host name.
	Instance string
	// MaxPollRecords bounds the records of one transaction. Default 1000.
	MaxPollRecords int
	// TransactionTimeout is how long an unfinished transaction of a dead
	// processor holds its partitions (when nothing with the same Instance
	// restarts). Default 60 s.
	TransactionTimeout time.Duration
	// Keys unwraps call keys and makes recording keys. Required.
	Keys keys.Manager
	// Store receives the sealed recordings. Required.
	Store objstore.Store
	// SpoolDir holds the open calls' sealed media; default os.TempDir().
	SpoolDir string
	// Workers finish that many calls at once. Default 4.
	Workers int
	// ExitWhenCaughtUp returns once the group has committed, on every
	// partition of the media topic, an offset at the partition's end (as
	// listed after a poll that brought nothing): everything written before
	// then is recorded or, for calls still open, checkpointed. For catch-up
	// runs, tests and demos. Never decided by a quiet period.
	ExitWhenCaughtUp bool
	// Logger, default discard.
	Logger *slog.Logger
	// Progress, if set, is called after every transaction.
	Progress func(Stats)
	// Tenants, if set, are the only tenants this processor records; the
	// media of others is left to the processors that serve them (a
	// dedicated processor group per tenant). Default: every tenant.
	Tenants []string
	// PCI, if set, says which tenants record in PCI DSS mode: DTMF digits
	// are stored masked, their tones are silenced in the recording before
	// it is written, and the raw media (which holds them) is not kept.
	PCI func(tenant string) bool
	// SilentComfortNoise records the spans RFC 3389 comfort-noise packets
	// describe as silence. By default they hold the noise the packets
	// describe (what the listener heard, and what G.729 Annex B's decoder
	// generates for its own silence frames).
	SilentComfortNoise bool
	// Retention, if set, is how long each tenant's recordings and raw
	// media must be kept: their objects are locked (object lock,
	// compliance mode) until the time it gives at storage, which the
	// RecordingStored records. Fixed then: a later policy never shortens
	// what was stored. Zero: not locked.
	Retention func(tenant string) time.Duration
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "verbatim-process"
	}
	if c.Instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			host = hex.EncodeToString(b)
		}
		c.Instance = host
	}
	if c.MaxPollRecords <= 0 {
		c.MaxPollRecords = 1000
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = time.Minute
	}
	if c.SpoolDir == "" {
		c.SpoolDir = os.TempDir()
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats counts what a Run did.
type Stats struct {
	Records    uint64 // media records consumed in transactions
	Batches    uint64 // PacketBatch records spooled
	Duplicates uint64 // batches seen before (an ingest run repeated)
	Recorded   uint64 // recordings stored and announced
	Failed     uint64 // calls announced as failed (raw media stored)
	NoMedia    uint64 // calls that ended without any media
	Rejected   uint64 // records that could not be used (logged)
	Replayed   uint64 // records read again to rebuild open calls
	Aborted    uint64 // transactions aborted (rebalance) and redone
	Open       int    // calls open now
	// ReclaimedFiles and ReclaimedBytes are what a crashed run of the same
	// instance left in its spool, removed at the start.
	ReclaimedFiles, ReclaimedBytes uint64
}

// spoolName is an instance's spool directory name: the instance itself
// where it is a plain name, else a digest of it.
func spoolName(instance string) string {
	if tenantRE.MatchString(strings.ToLower(instance)) && !strings.Contains(instance, "..") {
		return instance
	}
	sum := sha256.Sum256([]byte(instance))
	return hex.EncodeToString(sum[:8])
}

// reclaimSpool empties dir (creating it 0700 if it does not exist) and
// says how many files and bytes were left in it.
func reclaimSpool(dir string) (files, bytes uint64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() {
			return err
		}
		files++
		if info, err := d.Info(); err == nil {
			bytes += uint64(info.Size())
		}
		return nil
	})
	if err == nil {
		err = os.RemoveAll(dir)
	}
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("processors: spool %s: %w", dir, err)
	}
	return files, bytes, nil
}

// checkpointPrefix starts the offset-commit metadata of every media
// partition. "restart=N" follows when calls are open: N is the offset of
// the first batch of the oldest open call, where a new owner of the
// partition starts reading to rebuild them.
const checkpointPrefix = "verbatim-process/v1"

// maxBatchBytes bounds one spooled record (Kafka's default limit is 1 MiB).
const maxBatchBytes = 16 << 20

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// openCall is a call whose media is arriving: its batches are appended,
// still sealed under the call's key, to a spool file, so memory per call is
// a few hundred bytes whatever its length.
type openCall struct {
	tenant, id, keyID string
	partition         int32
	firstOffset       int64
	spool             *os.File
	size              int64
	streams           map[string]*streamSeen
}

type streamSeen struct {
	next, received, packets uint64
	first                   int64 // first arrival, Unix ns
}

func (c *openCall) discard() {
	c.spool.Close()
	os.Remove(c.spool.Name())
}

type finishing struct {
	c   *openCall
	end *verbatimv1.MediaEnded
	// again is set when the call is recorded again from the raw media of
	// an earlier recording (verbatim reprocess).
	again *again
}

// again says how a call recorded before is recorded again: under which
// id, superseding what, and with which raw media (already stored: it is
// not stored twice).
type again struct {
	recordingID string
	supersedes  *verbatimv1.Supersession
	rawKey      string
	rawSize     uint64
	rawSHA256   []byte
	digits      bool // announce the DTMF (the earlier attempt failed, so it never was)
	// retainUntil is the superseded recording's lock: the new recording
	// is kept at least as long (a policy never shortens what was stored).
	retainUntil time.Time
}

type processor struct {
	cfg   Config
	sess  *kgo.GroupTransactSession
	adm   *kadm.Client
	reg   *keyreg.Registry
	dir   string
	open  map[int32]map[string]*openCall
	stats Stats
	done  []finishing // calls ended in this transaction
	// undo holds, for each call this transaction changed, its state
	// before: an aborted transaction is rolled back in place, because the
	// consumer goes back to the committed offsets and re-reads the records.
	undo map[*openCall]*snapshot
	txn  Stats  // counts of this transaction, added to stats on commit
	wbuf []byte // one spool write

	mu       sync.Mutex // guards the fields below, set by group callbacks
	assigned map[int32]bool
	restore  map[int32]bool
	drop     map[int32]bool
}

// Run records calls until ctx ends (or the media topic stays idle for
// IdleExit). It reads the media topic in a consumer group, in Kafka
// transactions: a RecordingStored event and the recording's data key are
// committed together with the offsets of the media that made them, so each
// call is announced once. Open calls live in spool files; the offset of the
// oldest one is committed with the offsets, and whoever owns a partition
// next (this process after a crash, or another after a rebalance) reads
// from there to rebuild them. Nothing about open calls is lost, and nothing
// is recorded twice.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	cfg.setDefaults()
	if cfg.Keys == nil || cfg.Store == nil {
		return Stats{}, errors.New("processors: keys and store are required")
	}
	// The spool is the instance's own: what a crashed run of the same
	// instance left there is reclaimed once that run is fenced, below.
	dir := filepath.Join(cfg.SpoolDir, "verbatim-process-"+spoolName(cfg.Instance))
	defer os.RemoveAll(dir)
	p := &processor{cfg: cfg, dir: dir, open: map[int32]map[string]*openCall{}, undo: map[*openCall]*snapshot{},
		assigned: map[int32]bool{}, restore: map[int32]bool{}, drop: map[int32]bool{}}
	defer p.discardAll()

	regCl, err := kafkaclient.New(cfg.Kafka, keyreg.ConsumeOpts()...)
	if err != nil {
		return Stats{}, err
	}
	p.reg = keyreg.Start(regCl)
	defer p.reg.Close()

	p.sess, err = kafkaclient.NewGroupTransactSession(cfg.Kafka,
		kgo.ConsumerGroup(cfg.Group), kgo.ConsumeTopics(schemas.TopicMedia),
		kgo.TransactionalID("verbatim-process-"+cfg.Instance),
		kgo.InstanceID(cfg.Instance),
		kgo.TransactionTimeout(cfg.TransactionTimeout),
		kgo.RequireStableFetchOffsets(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Transaction markers are delivered (and skipped by apply), so the
		// committed offset of a partition reaches its end and "caught up"
		// is an offset comparison (ExitWhenCaughtUp).
		kgo.KeepControlRecords(),
		kgo.OnPartitionsAssigned(p.onAssigned),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onRevoked),
	)
	if err != nil {
		return Stats{}, err
	}
	defer p.sess.Close()
	// Take the transactional id now: this fences a dead predecessor with
	// the same Instance and aborts its open transaction. Otherwise its
	// pending offsets hold the partitions (fetching committed offsets
	// waits for them to be stable) until the transaction times out, and
	// the id would only be taken with the first transaction, which needs
	// those partitions: a minute lost at every crash.
	if _, _, err := p.sess.Client().ProducerID(ctx); err != nil {
		return Stats{}, fmt.Errorf("processors: transactional id %s: %w", "verbatim-process-"+cfg.Instance, err)
	}
	// Fenced, the predecessor writes nothing more: its spool goes.
	files, bytes, err := reclaimSpool(dir)
	if err != nil {
		return Stats{}, err
	}
	if files > 0 {
		cfg.Logger.Warn("reclaimed the spool a crashed run of this instance left (its calls are rebuilt from the media topic)", "dir", dir, "files", files, "bytes", bytes)
	}
	p.stats.ReclaimedFiles, p.stats.ReclaimedBytes = files, bytes
	p.adm = kadm.NewClient(p.sess.Client())
	err = p.loop(ctx)
	p.stats.Open = p.openCount()
	return p.stats, err
}

func (p *processor) onAssigned(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range parts[schemas.TopicMedia] {
		p.assigned[n], p.restore[n] = true, true
		delete(p.drop, n)
	}
}

func (p *processor) onRevoked(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range parts[schemas.TopicMedia] {
		delete(p.assigned, n)
		delete(p.restore, n)
		p.drop[n] = true
	}
}

// snapshot is a call's state before the current transaction changed it.
type snapshot struct {
	created bool // the call was opened in this transaction
	size    int64
	streams map[string]streamSeen
}

// touch records c's state before this transaction's first change to it.
func (p *processor) touch(c *openCall, created bool) {
	if _, ok := p.undo[c]; ok {
		return
	}
	sn := &snapshot{created: created, size: c.size}
	if !created {
		sn.streams = make(map[string]streamSeen, len(c.streams))
		for id, st := range c.streams {
			sn.streams[id] = *st
		}
	}
	p.undo[c] = sn
}

// rollback undoes an aborted transaction: calls it ended are open again,
// calls it opened are gone, and spools are cut back to their size before.
func (p *processor) rollback() error {
	for _, f := range p.done {
		calls := p.open[f.c.partition]
		if calls == nil {
			calls = map[string]*openCall{}
			p.open[f.c.partition] = calls
		}
		calls[f.c.id] = f.c
	}
	p.done = p.done[:0]
	var errs []error
	for c, sn := range p.undo {
		if sn.created {
			delete(p.open[c.partition], c.id)
			c.discard()
			continue
		}
		c.size = sn.size
		clear(c.streams)
		for id, st := range sn.streams {
			c.streams[id] = &st
		}
		if err := c.spool.Truncate(sn.size); err != nil {
			errs = append(errs, err)
		}
		if _, err := c.spool.Seek(sn.size, io.SeekStart); err != nil {
			errs = append(errs, err)
		}
	}
	clear(p.undo)
	p.txn = Stats{}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("processors: roll back spools: %w", err)
	}
	return nil
}

func (p *processor) discardAll() {
	for n, calls := range p.open {
		for _, c := range calls {
			c.discard()
		}
		delete(p.open, n)
	}
	for _, f := range p.done {
		f.c.discard()
	}
	p.done = p.done[:0]
}

func (p *processor) openCount() int {
	n := 0
	for _, calls := range p.open {
		n += len(calls)
	}
	return n
}

// membership applies the group callbacks' changes: state of revoked
// partitions is dropped, newly assigned ones are rebuilt.
func (p *processor) membership(ctx context.Context) (rebuilt bool, err error) {
	p.mu.Lock()
	drop, restore := p.drop, p.restore
	p.drop, p.restore = map[int32]bool{}, map[int32]bool{}
	p.mu.Unlock()
	for n := range drop {
		for _, c := range p.open[n] {
			c.discard()
		}
		delete(p.open, n)
	}
	if len(restore) == 0 {
		return false, nil
	}
	for n := range restore {
		for _, c := range p.open[n] {
			c.discard()
		}
		delete(p.open, n)
	}
	return true, p.rebuild(ctx, restore)
}

// rebuild reads each partition from its checkpoint's restart offset up to
// the committed offset, spooling again the calls that were open there.
// Calls whose MediaEnded is in that range were recorded before the
// checkpoint and are skipped.
func (p *processor) rebuild(ctx context.Context, parts map[int32]bool) error {
	offs, err := p.adm.FetchOffsets(ctx, p.cfg.Group)
	if err != nil {
		return fmt.Errorf("processors: fetch checkpoints: %w", err)
	}
	from := map[int32]kgo.Offset{}
	until := map[int32]int64{}
	for n := range parts {
		o, ok := offs.Lookup(schemas.TopicMedia, n)
		if !ok || o.Err != nil || o.At < 0 {
			continue
		}
		restart, ok := parseCheckpoint(o.Metadata)
		if !ok || restart >= o.At {
			continue
		}
		from[n], until[n] = kgo.NewOffset().At(restart), o.At
	}
	if len(from) == 0 {
		return nil
	}
	start := time.Now()
	// With the markers delivered, the record at the committed offset's
	// left is always delivered (data or marker), so each range ends on a
	// record, not on a poll that brought nothing.
	rd, err := kafkaclient.New(p.cfg.Kafka, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicMedia: from}),
		kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer rd.Close()
	// Retention may have removed the start of the range: then only the
	// rest can be rebuilt, and the completeness report shows the loss.
	if starts, err := p.adm.ListStartOffsets(ctx, schemas.TopicMedia); err == nil {
		for n, end := range until {
			if s, ok := starts.Lookup(schemas.TopicMedia, n); ok && s.Err == nil && s.Offset >= end {
				delete(until, n)
			}
		}
	}
	var replayed uint64
	for len(until) > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fs.EachError(func(t string, n int32, err error) {
			ferr = fmt.Errorf("processors: rebuild %s/%d: %w", t, n, err)
		})
		if ferr != nil {
			return ferr
		}
		for _, r := range fs.Records() {
			end, ok := until[r.Partition]
			if !ok || r.Offset >= end {
				continue
			}
			p.apply(r, true)
			replayed++
			if r.Offset+1 >= end {
				delete(until, r.Partition)
			}
		}
	}
	p.stats.Replayed += replayed
	p.cfg.Logger.Info("rebuilt open calls", "partitions", len(from), "records", replayed, "open", p.openCount(), "took", time.Since(start))
	return nil
}

func parseCheckpoint(md string) (int64, bool) {
	rest, ok := strings.CutPrefix(md, checkpointPrefix+" restart=")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil && n >= 0
}

func (p *processor) loop(ctx context.Context) error {
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if p.cfg.ExitWhenCaughtUp {
			// The poll returns, empty, now and then so that the end
			// offsets can be compared; the timeout decides nothing.
			pctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fs := p.sess.PollRecords(pctx, p.cfg.MaxPollRecords)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(t string, n int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && ferr == nil {
				ferr = fmt.Errorf("processors: fetch %s/%d: %w", t, n, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		if _, err := p.membership(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		recs := fs.Records()
		if len(recs) == 0 {
			if p.cfg.ExitWhenCaughtUp {
				behind, err := kafkaclient.GroupCaughtUp(ctx, p.adm, p.cfg.Group, schemas.TopicMedia)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("processors: %w", err)
				}
				if len(behind) == 0 {
					return nil
				}
			}
			continue
		}
		if err := p.transaction(ctx, recs); err != nil {
			if ctx.Err() != nil {
				// Stopped mid-transaction: whatever the broker did not
				// commit is read again by whoever takes the partitions.
				return nil
			}
			return err
		}
		if p.cfg.Progress != nil {
			s := p.stats
			s.Open = p.openCount()
			p.cfg.Progress(s)
		}
	}
}

// transaction applies one poll's records, records the calls that ended in
// it, and commits the announcements with the offsets and checkpoints.
func (p *processor) transaction(ctx context.Context, recs []*kgo.Record) error {
	if err := p.sess.Begin(); err != nil {
		return fmt.Errorf("processors: begin transaction: %w", err)
	}
	for _, r := range recs {
		p.apply(r, false)
	}
	out, err := p.finishAll(ctx)
	if err != nil {
		if _, aerr := p.sess.End(ctx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return err
	}
	var recorded, failed uint64
	// Every record of the transaction must be accepted before the commit:
	// a record the broker refuses (MESSAGE_TOO_LARGE, say) would otherwise
	// be lost while the transaction commits the offsets of the media that
	// made it, and the call would be announced nowhere.
	var refusedMu sync.Mutex
	var refused error
	for _, o := range out {
		for _, r := range o.recs {
			p.sess.Produce(ctx, r, func(r *kgo.Record, err error) {
				if err == nil {
					return
				}
				refusedMu.Lock() // promises run on the client's goroutines
				if refused == nil {
					refused = fmt.Errorf("%s for call %s to %s (%d bytes): %w",
						schemas.HeaderValue(r.Headers, schemas.HeaderType), r.Key, r.Topic, len(r.Value), err)
				}
				refusedMu.Unlock()
			})
		}
		switch {
		case o.failed:
			failed++
		case len(o.recs) > 0:
			recorded++
		}
	}
	if err := p.sess.Client().Flush(ctx); err != nil {
		return fmt.Errorf("processors: flush: %w", err)
	}
	refusedMu.Lock()
	err = refused
	refusedMu.Unlock()
	if err != nil {
		if _, aerr := p.sess.End(ctx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return errors.Join(fmt.Errorf("processors: a record was refused, so the transaction is aborted and nothing of it committed: %w", err), p.rollback())
	}
	restart := map[int32]int64{}
	for n, calls := range p.open {
		for _, c := range calls {
			if cur, ok := restart[n]; !ok || c.firstOffset < cur {
				restart[n] = c.firstOffset
			}
		}
	}
	cctx := kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				pp := &req.Topics[i].Partitions[j]
				md := checkpointPrefix
				if off, ok := restart[pp.Partition]; ok {
					md += " restart=" + strconv.FormatInt(off, 10)
				}
				pp.Metadata = &md
			}
		}
		return nil
	})
	committed, err := p.sess.End(cctx, kgo.TryCommit)
	if err != nil {
		return fmt.Errorf("processors: commit: %w", err)
	}
	if !committed {
		// A rebalance, or the broker still completing the previous
		// transaction: the consumer is back at the committed offsets.
		p.stats.Aborted++
		p.cfg.Logger.Info("transaction aborted; rolled back, its records are read again")
		return p.rollback()
	}
	for _, f := range p.done {
		f.c.discard()
	}
	p.done = p.done[:0]
	clear(p.undo)
	p.stats.Records += uint64(len(recs))
	p.stats.Recorded += recorded
	p.stats.Failed += failed
	p.stats.Batches += p.txn.Batches
	p.stats.Duplicates += p.txn.Duplicates
	p.stats.NoMedia += p.txn.NoMedia
	p.stats.Rejected += p.txn.Rejected
	p.txn = Stats{}
	return nil
}

// apply takes one media record. When replaying, calls that end are known
// to be recorded already and are dropped. A batch of an open call is
// appended without allocating: only its header fields are read, and the
// envelope is validated in full when a call opens and when it ends.
func (p *processor) apply(r *kgo.Record, replay bool) {
	if r.Attrs.IsControl() {
		return // a transaction marker: its offset is committed, nothing to record
	}
	if len(p.cfg.Tenants) > 0 && !p.serves(schemas.HeaderValue(r.Headers, schemas.HeaderTenant)) {
		return // another processor's tenant
	}
	calls := p.open[r.Partition]
	typ := schemas.HeaderValue(r.Headers, schemas.HeaderType)
	if string(typ) == "verbatim.v1.PacketBatch" {
		if c := calls[string(r.Key)]; c != nil {
			if tenant := schemas.HeaderValue(r.Headers, schemas.HeaderTenant); string(tenant) != c.tenant {
				p.reject(r, replay, fmt.Errorf("call %s: tenant %q, but its first batch said %q", c.id, tenant, c.tenant))
				return
			}
			p.spool(r, c, replay)
			return
		}
	}
	env, err := schemas.ParseHeaders(r.Headers)
	if err == nil && !tenantRE.MatchString(env.Tenant) {
		err = fmt.Errorf("invalid tenant %q", env.Tenant)
	}
	if err != nil {
		p.reject(r, replay, err)
		return
	}
	callID := string(r.Key)
	switch env.Type {
	case "verbatim.v1.PacketBatch":
		h, err := scanBatch(r.Value)
		if err != nil || string(h.callID) != callID || !h.sealed || len(h.keyID) == 0 {
			p.reject(r, replay, fmt.Errorf("not a sealed PacketBatch of call %s: %v", callID, err))
			return
		}
		f, err := os.CreateTemp(p.dir, "raw-*")
		if err != nil {
			// The disk is the processor's: failing it is fatal to
			// the call, and loudly so.
			p.reject(r, replay, fmt.Errorf("spool: %w", err))
			return
		}
		c := &openCall{tenant: env.Tenant, id: callID, keyID: string(h.keyID), partition: r.Partition,
			firstOffset: r.Offset, spool: f, streams: map[string]*streamSeen{}}
		if calls == nil {
			calls = map[string]*openCall{}
			p.open[r.Partition] = calls
		}
		calls[callID] = c
		if !replay {
			p.touch(c, true)
		}
		p.spool(r, c, replay)
	case "verbatim.v1.MediaEnded":
		var me verbatimv1.MediaEnded
		if err := proto.Unmarshal(r.Value, &me); err != nil || me.GetCallId() != callID {
			p.reject(r, replay, fmt.Errorf("not a MediaEnded of call %s: %v", callID, err))
			return
		}
		c := calls[callID]
		if c == nil {
			if !replay {
				p.txn.NoMedia++
			}
			return
		}
		delete(calls, callID)
		if replay {
			c.discard()
			return
		}
		p.touch(c, false)
		p.done = append(p.done, finishing{c: c, end: &me})
	default:
		p.reject(r, replay, fmt.Errorf("unexpected event type %q", env.Type))
	}
}

// spool appends one batch of an open call to its spool file.
func (p *processor) spool(r *kgo.Record, c *openCall, replay bool) {
	h, err := scanBatch(r.Value)
	if err != nil || string(h.callID) != c.id || !h.sealed {
		p.reject(r, replay, fmt.Errorf("not a sealed PacketBatch of call %s: %v", c.id, err))
		return
	}
	s := c.streams[string(h.streamID)]
	if s != nil && h.batchIndex < s.next {
		if !replay {
			p.txn.Duplicates++
		}
		return
	}
	if !replay {
		p.touch(c, false)
	}
	if s == nil {
		s = &streamSeen{first: h.firstArrival}
		c.streams[string(h.streamID)] = s
	}
	// One write per batch: length prefix and value together.
	p.wbuf = binary.AppendUvarint(p.wbuf[:0], uint64(len(r.Value)))
	p.wbuf = append(p.wbuf, r.Value...)
	if _, err := c.spool.Write(p.wbuf); err != nil {
		p.reject(r, replay, fmt.Errorf("spool: %w", err))
		return
	}
	c.size += int64(len(p.wbuf))
	s.next = h.batchIndex + 1
	s.received++
	s.packets += h.packetCount
	s.first = min(s.first, h.firstArrival)
	if !replay {
		p.txn.Batches++
	}
}

// serves reports whether tenant is one of Config.Tenants (no allocation).
func (p *processor) serves(tenant []byte) bool {
	for _, t := range p.cfg.Tenants {
		if string(tenant) == t {
			return true
		}
	}
	return false
}

// reject skips a record that cannot be used. It is logged and counted
// once: not again when an aborted transaction or a rebuild reads it anew.
func (p *processor) reject(r *kgo.Record, replay bool, err error) {
	if replay {
		return
	}
	p.txn.Rejected++
	p.cfg.Logger.Warn("media record skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
}

// finishAll records the calls that ended in this transaction, a few at a
// time, and returns the records announcing them.
func (p *processor) finishAll(ctx context.Context) ([]outcome, error) {
	if len(p.done) == 0 {
		return nil, nil
	}
	out := make([]outcome, len(p.done))
	errs := make([]error, len(p.done))
	sem := make(chan struct{}, p.cfg.Workers)
	var wg sync.WaitGroup
	for i, f := range p.done {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // joined by wg.Wait below
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = p.finish(ctx, f)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// digitsRecord announces the DTMF keyed in a call as contact-centre
// metadata, its digits sealed under the call's key; in PCI mode each digit
// is "*", marked masked.
func digitsRecord(c *openCall, opener *seal.Sealer, recordingID string, ds []dtmfEvent, pci bool) (*kgo.Record, error) {
	personal := &verbatimv1.MetadataPersonal{}
	for _, d := range ds {
		digit := string(d.digit)
		if pci {
			digit = "*"
		}
		personal.Digits = append(personal.Digits, &verbatimv1.EnteredDigits{Digits: digit, At: timestamppb.New(d.at), Method: "rfc4733", Masked: pci})
	}
	b, err := proto.Marshal(personal)
	if err != nil {
		return nil, err
	}
	sealed, err := opener.Seal(nil, "verbatim.v1.MetadataPersonal", b)
	if err != nil {
		return nil, err
	}
	return schemas.NewRecord(schemas.TopicMetadata, []byte(c.id),
		schemas.Envelope{ID: schemas.DerivedID(recordingID, "dtmf"), Tenant: c.tenant, CallID: c.id, OccurredAt: ds[0].at, Producer: "verbatim-process"},
		&verbatimv1.MetadataAttached{CallId: c.id, OccurredAt: timestamppb.New(ds[0].at), Source: "verbatim-process:rfc4733", Personal: sealed})
}

// RecordingID is the deterministic id of the recording of a call's media
// sealed under the data key keyID: redoing it (an aborted transaction, a
// rebuild) gives the same id, while the same call ingested again, under a
// new key, is another recording beside it, not an overwrite of the first.
func RecordingID(callID, keyID string) string {
	return schemas.DerivedID(callID, keyID, "recording/v1")
}

// ObjectKeys returns where a call's recording and raw media are stored:
// tenant/yyyy/mm/dd/call-id/recording-id, by the call's UTC start day.
func ObjectKeys(tenant, callID, recordingID string, started time.Time) (recording, raw string) {
	prefix := fmt.Sprintf("%s/%s/%s/%s", tenant, started.UTC().Format("2006/01/02"), callID, recordingID)
	return prefix + ".wav.sealed", prefix + ".rtp.sealed"
}

// finish turns one ended call's spool into its stored recording and raw
// media, and returns the DataKey and RecordingStored records; or, when the
// call cannot be recorded, stores the raw media and returns RecordingFailed.
func (p *processor) finish(ctx context.Context, f finishing) (outcome, error) {
	c := f.c
	opener, err := p.callOpener(ctx, c)
	if errors.Is(err, keyreg.ErrShredded) {
		// Erased before it was recorded: there is nothing to record.
		p.cfg.Logger.Warn("call's data key is shredded; not recording it", "call", c.id)
		return outcome{}, nil
	}
	var perm permanent
	if errors.As(err, &perm) {
		return p.failed(ctx, f, err)
	}
	if err != nil {
		return outcome{}, fmt.Errorf("processors: call %s: %w", c.id, err)
	}
	res, err := p.record(ctx, f, opener)
	if errors.As(err, &perm) {
		return p.failed(ctx, f, err)
	}
	return res, err
}

// permanent marks an error that retrying cannot fix: the call is announced
// as failed, with its raw media stored, instead of holding up the others.
type permanent struct{ error }

func (e permanent) Unwrap() error { return e.error }

// outcome is what finishing one call produced.
type outcome struct {
	recs   []*kgo.Record
	failed bool
}

// callOpener finds and unwraps the call's data key. The registry reads
// the keys topic to its end before it says a key is not there, and ingest
// stores a call's key before any of its media: a key not found is missing,
// a permanent failure. Key manager errors are permanent when the manager
// refuses the key (keys.ErrUnwrap), and not when it cannot be reached
// (Vault down): then the transaction aborts and is retried.
func (p *processor) callOpener(ctx context.Context, c *openCall) (*seal.Sealer, error) {
	dk, err := p.reg.Get(ctx, c.tenant, c.keyID)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, keyreg.ErrShredded):
		return nil, err
	case errors.Is(err, keyreg.ErrNotFound):
		return nil, permanent{fmt.Errorf("data key %s is not in the key registry", c.keyID)}
	default:
		return nil, permanent{err}
	}
	plain, err := p.cfg.Keys.UnwrapDataKey(ctx, c.tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
	if errors.Is(err, keys.ErrUnwrap) {
		// The key manager answered: this key cannot be unwrapped (its
		// KEK is gone or it was tampered with). Retrying cannot help.
		return nil, permanent{err}
	}
	if err != nil {
		return nil, fmt.Errorf("unwrap key %s: %w", c.keyID, err)
	}
	s, err := seal.New(c.tenant, c.keyID, plain)
	if err != nil {
		return nil, permanent{err}
	}
	return s, nil
}

// storeRaw stores the call's spooled batches as they came, sealed under the
// call's key.
func (p *processor) storeRaw(ctx context.Context, c *openCall, rawKey string, retainUntil time.Time) (objstore.Info, error) {
	if _, err := c.spool.Seek(0, io.SeekStart); err != nil {
		return objstore.Info{}, err
	}
	info, err := p.cfg.Store.Put(ctx, rawKey, c.spool, c.size, objstore.PutOptions{ContentType: "application/vnd.verbatim.rtp", RetainUntil: retainUntil})
	if err != nil {
		return info, fmt.Errorf("processors: store raw media of %s: %w", c.id, err)
	}
	return info, nil
}

// retainUntil is when the objects of a tenant's call stored now may be
// deleted (zero: whenever).
func (p *processor) retainUntil(tenant string) time.Time {
	if p.cfg.Retention == nil {
		return time.Time{}
	}
	d := p.cfg.Retention(tenant)
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d).UTC().Truncate(time.Second)
}

// startedAt is when the call was signalled, or else its first packet.
func (c *openCall) startedAt(end *verbatimv1.MediaEnded) time.Time {
	if end.GetStartedAt() != nil {
		return end.GetStartedAt().AsTime()
	}
	return c.firstArrival()
}

// firstArrival is the arrival of the call's first packet, any stream.
func (c *openCall) firstArrival() time.Time {
	var t0 int64
	for _, s := range c.streams {
		if t0 == 0 || s.first < t0 {
			t0 = s.first
		}
	}
	return time.Unix(0, t0)
}

// failed stores the raw media and announces the failure with its reason.
func (p *processor) failed(ctx context.Context, f finishing, cause error) (outcome, error) {
	c, end := f.c, f.end
	started := c.startedAt(end)
	recordingID := RecordingID(c.id, c.keyID)
	_, rawKey := ObjectKeys(c.tenant, c.id, recordingID, started)
	if f.again != nil {
		// A reprocessing that fails leaves the call's current recording
		// as it is: the job reports the call, nothing is announced.
		return outcome{}, cause
	}
	info, err := p.storeRaw(ctx, c, rawKey, p.retainUntil(c.tenant))
	if err != nil {
		return outcome{}, err
	}
	p.cfg.Logger.Error("call not recorded; its raw media is stored", "call", c.id, "raw", rawKey, "err", cause)
	now := time.Now()
	rec, err := schemas.NewRecord(schemas.TopicRecordings, []byte(c.id),
		schemas.Envelope{ID: schemas.DerivedID(recordingID, "failed"), Tenant: c.tenant, CallID: c.id, OccurredAt: now, Producer: "verbatim-process"},
		&verbatimv1.RecordingFailed{CallId: c.id, RecordingId: recordingID, Reason: cause.Error(), FailedAt: timestamppb.New(now),
			EndReason: end.GetReason(), CallStartedAt: timestamppb.New(started), RawObjectKey: rawKey,
			RawSize: uint64(info.Size), RawSha256: info.SHA256, MediaEnded: end, Processing: p.processing(c.tenant)})
	if err != nil {
		return outcome{}, err
	}
	audit, err := systemAudit(c.tenant, c.id, "recording.failed", recordingID, cause.Error(), now, nil)
	if err != nil {
		return outcome{}, err
	}
	return outcome{recs: []*kgo.Record{rec, audit}, failed: true}, nil
}

// systemAudit is the audit event of a recording stored (with the
// RecordingStored: the chain of custody) or failed: the processor's
// action, in the call's transaction.
func systemAudit(tenant, callID, action, recordingID, failure string, at time.Time, stored *verbatimv1.RecordingStored) (*kgo.Record, error) {
	id := schemas.DerivedID(recordingID, "audit", action)
	ev := &verbatimv1.AuditEvent{EventId: id, OccurredAt: timestamppb.New(at), Tenant: tenant, Action: action, CallId: callID,
		Actor:  &verbatimv1.Actor{Subject: "verbatim-process", Role: "system", Tenant: tenant},
		Target: &verbatimv1.Target{Type: "recording", Id: recordingID}, Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS,
		UserAgent: "verbatim-process/" + Revision, Recording: stored}
	if failure != "" {
		ev.Result, ev.Reason = verbatimv1.AuditResult_AUDIT_RESULT_ERROR, failure
	}
	return schemas.NewRecord(schemas.TopicAudit, []byte(tenant),
		schemas.Envelope{ID: id, Tenant: tenant, CallID: callID, OccurredAt: at, Producer: "verbatim-process"}, ev)
}

// record assembles, seals and stores the recording and the raw media.
func (p *processor) record(ctx context.Context, f finishing, opener *seal.Sealer) (outcome, error) {
	c, end := f.c, f.end
	t0 := c.firstArrival()
	started := c.startedAt(end)
	recordingID := RecordingID(c.id, c.keyID)
	if f.again != nil {
		recordingID = f.again.recordingID
	}
	objectKey, rawKey := ObjectKeys(c.tenant, c.id, recordingID, started)
	pci := p.cfg.PCI != nil && p.cfg.PCI(c.tenant)
	retain := p.retainUntil(c.tenant)
	if f.again != nil && f.again.retainUntil.After(retain) {
		retain = f.again.retainUntil
	}
	rec, err := newCallRecording(c.tenant, c.id, end.GetStreams(), t0, opener, p.dir, recordOptions{pci: pci, silentCN: p.cfg.SilentComfortNoise,
		retainUntil: retain})
	if err != nil {
		return outcome{}, err
	}
	defer rec.abandon() // its spools are gone once stored; this cleans up any other exit
	if _, err := c.spool.Seek(0, io.SeekStart); err != nil {
		return outcome{}, err
	}
	br := bufio.NewReaderSize(c.spool, 64<<10)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return outcome{}, fmt.Errorf("processors: call %s: spool: %w", c.id, err)
		}
		if n > maxBatchBytes {
			return outcome{}, fmt.Errorf("processors: call %s: spool: frame of %d bytes", c.id, n)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return outcome{}, fmt.Errorf("processors: call %s: spool: %w", c.id, err)
		}
		var pb verbatimv1.PacketBatch
		if err := proto.Unmarshal(buf, &pb); err != nil {
			return outcome{}, fmt.Errorf("processors: call %s: spool: %w", c.id, err)
		}
		if err := rec.batch(&pb); err != nil {
			return outcome{}, err
		}
	}
	ev, recKey, err := rec.finish(ctx, p.cfg.Keys, p.cfg.Store, recordingID, objectKey, end)
	if err != nil {
		return outcome{}, err
	}
	ev.EndReason, ev.CallStartedAt = end.GetReason(), timestamppb.New(started)
	ev.MediaEnded, ev.Processing = end, p.processing(c.tenant)
	if omitMediaEnded {
		ev.MediaEnded, ev.Processing = nil, ""
	}
	// In PCI mode the raw media is not kept: it holds the DTMF events
	// (and the tones) the recording has masked.
	switch {
	case f.again != nil:
		// The raw media of the earlier recording, already stored.
		ev.RawObjectKey, ev.RawSize, ev.RawSha256 = f.again.rawKey, f.again.rawSize, f.again.rawSHA256
		ev.Supersedes = f.again.supersedes
	case !pci:
		info, err := p.storeRaw(ctx, c, rawKey, retain) // the lock the recording announces
		if err != nil {
			return outcome{}, err
		}
		ev.RawObjectKey, ev.RawSize, ev.RawSha256 = rawKey, uint64(info.Size), info.SHA256
	}
	sent := map[string]*verbatimv1.StreamMedia{}
	for _, m := range end.GetMedia() {
		sent[m.GetStreamId()] = m
	}
	for _, sc := range ev.GetCompleteness() {
		m := sent[sc.GetStreamId()]
		sc.BatchesSent, sc.SrtpAuthFailures, sc.SrtpReplayed = m.GetBatches(), m.GetSrtpAuthFailures(), m.GetSrtpReplayed()
		if s := c.streams[sc.GetStreamId()]; s != nil {
			sc.BatchesReceived = s.received
		}
		if sc.BatchesReceived < sc.BatchesSent {
			p.cfg.Logger.Warn("media batches lost before the processor", "call", c.id, "stream", sc.GetStreamId(),
				"sent", sc.BatchesSent, "received", sc.BatchesReceived)
		}
	}
	now := time.Now()
	keyRec, err := schemas.NewRecord(schemas.TopicKeys, []byte(ev.GetKey().GetKeyId()),
		schemas.Envelope{ID: schemas.DerivedID(recordingID, "key"), Tenant: c.tenant, CallID: c.id, OccurredAt: now, Producer: "verbatim-process"},
		&verbatimv1.DataKey{KeyId: ev.GetKey().GetKeyId(), Tenant: c.tenant, WrappedDek: recKey.Wrapped.Ciphertext,
			KekName: recKey.Wrapped.KEKName, KekVersion: recKey.Wrapped.KEKVersion, KeyManager: p.cfg.Keys.Kind(),
			CreatedAt: timestamppb.New(now), Purpose: "recording", CallId: c.id})
	if err != nil {
		return outcome{}, err
	}
	storedRec, err := schemas.NewRecord(schemas.TopicRecordings, []byte(c.id),
		schemas.Envelope{ID: schemas.DerivedID(recordingID, "stored"), Tenant: c.tenant, CallID: c.id, OccurredAt: now, Producer: "verbatim-process"},
		ev)
	if err != nil {
		return outcome{}, err
	}
	custody, err := systemAudit(c.tenant, c.id, "recording.stored", recordingID, "", now, ev)
	if err != nil {
		return outcome{}, err
	}
	recs := []*kgo.Record{keyRec, storedRec, custody}
	if ds := rec.digits(); len(ds) > 0 && (f.again == nil || f.again.digits) {
		md, err := digitsRecord(c, opener, recordingID, ds, pci)
		if err != nil {
			return outcome{}, err
		}
		recs = append(recs, md)
	}
	return outcome{recs: recs}, nil
}
