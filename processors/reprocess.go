package processors

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ReprocessConfig configures a reprocess job (`verbatim reprocess`): the
// calls Select matches are recorded again from their raw media, through
// the code that records live calls, and each new recording is announced
// superseding the one it replaces.
type ReprocessConfig struct {
	// Kafka says how to reach the brokers. Required.
	Kafka kafkaclient.Config
	// Job names the job. Required. Its consumer group and transactional
	// id are "verbatim-reprocess-<Job>": running the same job again
	// resumes it where it stopped.
	Job string
	// Select chooses the calls. Select.Tenant is required.
	Select Selection
	// Reason, the operator's words, is added to each new recording's
	// supersession reason ("ticket 4711").
	Reason string
	// Force redoes the selected calls even when this build would record
	// nothing differently (a fix the processing string does not show);
	// it needs a Reason.
	Force bool
	// DryRun plans the job and returns: nothing is recorded or committed.
	DryRun bool
	// Keys unwraps call keys and makes recording keys. Required unless
	// DryRun.
	Keys keys.Manager
	// Store holds the raw media and receives the new recordings. Required
	// unless DryRun.
	Store objstore.Store
	// SpoolDir holds a call's media while it is recorded; default
	// os.TempDir().
	SpoolDir string
	// SilentComfortNoise and PCI as in Config: a tenant recorded in PCI
	// mode now has its DTMF masked in the new recordings, whatever the old
	// ones hold.
	SilentComfortNoise bool
	// Retention as in Config; a new recording is also kept at least as
	// long as the one it supersedes.
	Retention func(tenant string) time.Duration
	PCI       func(tenant string) bool
	// Actor is who runs the job, for the audit trail ("os-user:alice").
	Actor string
	// Workers redo that many calls at once. Default 2.
	Workers int
	// CallsPerTransaction bounds the calls one transaction redoes (about:
	// see pollSize). Default 32.
	CallsPerTransaction int
	// TransactionTimeout, default 5 minutes: a transaction redoes whole
	// calls, which for long calls takes a while.
	TransactionTimeout time.Duration
	// Logger, default discard.
	Logger *slog.Logger
	// Progress, if set, is called after planning and after every
	// committed transaction.
	Progress func(ReprocessStats)
}

// ReprocessStats is how far a job is. Selected = ToDo + Skipped, and
// ToDo = Done + Failed + Remaining.
type ReprocessStats struct {
	Scanned  int // recording events read to plan the job
	Selected int // recording chains the selection matched
	Skipped  int // of them, not to be redone (Planned.Skip says why)
	ToDo     int // of them, to be redone
	Done     int // redone and announced (by this run or an earlier run of the job)
	Failed   int // could not be redone: their current recording stays (Failures)
	// Remaining are still to be redone.
	Remaining int
	// Rate is calls redone per second by this run; ETA the time left at
	// that rate.
	Rate float64
	ETA  time.Duration
	// Failures maps each call that could not be redone to why.
	Failures map[string]string
}

// ReprocessReport is what a job planned and did.
type ReprocessReport struct {
	Processing string    // of this build: the new recordings'
	Plan       []Planned // what the job redoes or skips, and why
	Stats      ReprocessStats
}

const reprocessCheckpoint = "verbatim-reprocess/v1"

var jobRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,99}$`)

// Reprocess runs a reprocess job to its end and reports it.
//
// The job reads the recordings topic up to the end offsets it had when the
// job first started (kept in its committed offsets' metadata, so a
// restarted job has the same scope and does not read its own output). It
// plans from every recording event of the tenant there: for each call's
// raw media, its current recording (the highest generation), and whether
// the selection takes it. It then reads the topic again in its consumer
// group, and at the record of each current recording it redoes, records
// the call again from the raw media object, in a Kafka transaction with
// the offsets: the new recording's DataKey, its RecordingStored (naming
// the recording it supersedes, and why) and an audit event. A job killed
// mid-way and started again redoes nothing that was committed and misses
// nothing that was not. The new recording's id depends only on the call's
// raw media and this build's processing, so redoing a call again with the
// same code makes no second recording.
func Reprocess(ctx context.Context, cfg ReprocessConfig) (ReprocessReport, error) {
	if err := cfg.validate(); err != nil {
		return ReprocessReport{}, err
	}
	processing := Processing(cfg.SilentComfortNoise, cfg.PCI != nil && cfg.PCI(cfg.Select.Tenant))
	rep := ReprocessReport{Processing: processing}
	group := "verbatim-reprocess-" + cfg.Job
	sel := selectionHash(cfg.Select, processing, cfg.Force, cfg.Reason)

	admCl, err := kafkaclient.New(cfg.Kafka)
	if err != nil {
		return rep, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	ends, now, committed, err := jobScope(ctx, adm, group, sel)
	if err != nil {
		return rep, err
	}
	chains, scanned, bad, err := readChains(ctx, cfg.Kafka, cfg.Select, ends, now, func(n int) {
		cfg.Logger.Info("planning", "job", cfg.Job, "recording events read", n)
	})
	if err != nil {
		return rep, err
	}
	if bad > 0 {
		cfg.Logger.Warn("recording events that do not decode were skipped: their calls are not in the plan", "job", cfg.Job, "events", bad)
	}
	fromTopic, err := mediaEndedFromTopic(ctx, cfg.Kafka, cfg.Select.Tenant, withoutEnd(chains))
	if err != nil {
		return rep, err
	}
	rep.Plan = plan(chains, fromTopic, cfg.Select, processing, cfg.Reason, cfg.Force)
	st := &rep.Stats
	st.Scanned, st.Selected, st.Failures = scanned, len(rep.Plan), map[string]string{}
	todo := map[[2]int64]*Planned{}
	for i := range rep.Plan {
		pl := &rep.Plan[i]
		switch {
		case pl.Skip != "":
			st.Skipped++
		case pl.Done: // by an earlier run of the job: its recording is on the topic
			st.ToDo++
			st.Done++
		case pl.offset < committed[pl.partition]:
			// An earlier run committed past it and announced nothing:
			// it could not be redone (the audit trail says why).
			st.ToDo++
			st.Failed++
			st.Failures[pl.CallID] = "not redone by an earlier run of this job (its audit event says why); its current recording stays"
		default:
			st.ToDo++
			todo[[2]int64{int64(pl.partition), pl.offset}] = pl
		}
	}
	st.Remaining = len(todo)
	if cfg.Progress != nil {
		cfg.Progress(*st)
	}
	if !cfg.DryRun && len(todo) > 0 {
		if err := runJob(ctx, cfg, group, sel, ends, committed, todo, st); err != nil {
			return rep, err
		}
	}
	if st.Failed > 0 && !cfg.DryRun {
		return rep, fmt.Errorf("processors: reprocess: %d of %d calls could not be redone (their current recordings stay)", st.Failed, st.ToDo)
	}
	return rep, nil
}

func (c *ReprocessConfig) validate() error {
	switch {
	case !jobRE.MatchString(c.Job):
		return fmt.Errorf("processors: reprocess: job name %q: letters, digits, '.', '_' and '-' (at most 100)", c.Job)
	case !tenantRE.MatchString(c.Select.Tenant):
		return fmt.Errorf("processors: reprocess: a tenant is required (got %q)", c.Select.Tenant)
	case c.Force && strings.TrimSpace(c.Reason) == "":
		return errors.New("processors: reprocess: --force redoes calls this build would record alike; say why (a reason)")
	case !c.DryRun && (c.Keys == nil || c.Store == nil):
		return errors.New("processors: reprocess: keys and store are required")
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.CallsPerTransaction <= 0 {
		c.CallsPerTransaction = 32
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 5 * time.Minute
	}
	if c.SpoolDir == "" {
		c.SpoolDir = os.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Actor == "" {
		c.Actor = "unknown"
	}
	return nil
}

// jobScope returns the offsets the job reads up to, and what it has
// committed: for a job that has committed before, the ends its first run
// saw (its metadata); otherwise the topic's ends now.
func jobScope(ctx context.Context, adm *kadm.Client, group, sel string) (ends, now jobEnds, committed map[int32]int64, err error) {
	offs, err := adm.FetchOffsetsForTopics(ctx, group, schemas.TopicRecordings)
	if err == nil {
		err = offs.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		offs, err = nil, nil // a job never run (some brokers say so rather than list nothing)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("processors: reprocess: committed offsets of %s: %w", group, err)
	}
	_, listed, err := kafkaclient.Bounds(ctx, adm, schemas.TopicRecordings)
	if err != nil {
		return nil, nil, nil, err
	}
	now = jobEnds{}
	listed.Each(func(o kadm.ListedOffset) { now[o.Partition] = o.Offset })
	committed = map[int32]int64{}
	var md string
	offs.Each(func(o kadm.OffsetResponse) {
		if o.At >= 0 {
			committed[o.Partition] = o.At
			if strings.HasPrefix(o.Metadata, reprocessCheckpoint) {
				md = o.Metadata
			}
		}
	})
	if md != "" {
		ends, gotSel, err := parseJobCheckpoint(md)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("processors: reprocess: %s: %w", group, err)
		}
		if gotSel != sel {
			return nil, nil, nil, fmt.Errorf("processors: reprocess: job %s was started with another selection, reason or build (its checkpoint says %s, this run %s): give this one another --job name",
				strings.TrimPrefix(group, "verbatim-reprocess-"), gotSel, sel)
		}
		return ends, now, committed, nil
	}
	return now, now, committed, nil
}

// jobCheckpoint is the offset-commit metadata of every partition a job
// commits: "verbatim-reprocess/v1 sel=HASH ends=P:OFFSET,...".
func jobCheckpoint(sel string, ends jobEnds) string {
	var b strings.Builder
	b.WriteString(reprocessCheckpoint + " sel=" + sel + " ends=")
	for i, p := range slices.Sorted(maps.Keys(ends)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d", p, ends[p])
	}
	return b.String()
}

func parseJobCheckpoint(md string) (jobEnds, string, error) {
	rest, ok := strings.CutPrefix(md, reprocessCheckpoint+" ")
	if !ok {
		return nil, "", fmt.Errorf("checkpoint %q: not a reprocess job's", md)
	}
	var sel string
	ends := jobEnds{}
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "sel":
			sel = v
		case "ends":
			for _, pe := range strings.Split(v, ",") {
				ps, es, ok := strings.Cut(pe, ":")
				p, err1 := strconv.ParseInt(ps, 10, 32)
				e, err2 := strconv.ParseInt(es, 10, 64)
				if !ok || err1 != nil || err2 != nil || p < 0 || e < 0 {
					return nil, "", fmt.Errorf("checkpoint %q: bad ends", md)
				}
				ends[int32(p)] = e
			}
		}
	}
	if sel == "" || len(ends) == 0 {
		return nil, "", fmt.Errorf("checkpoint %q: incomplete", md)
	}
	return ends, sel, nil
}

// runJob reads the recordings topic in the job's group and redoes each
// planned call at its current recording's record, in transactions.
func runJob(ctx context.Context, cfg ReprocessConfig, group, sel string, ends jobEnds, committed map[int32]int64, todo map[[2]int64]*Planned, st *ReprocessStats) error {
	dir, err := os.MkdirTemp(cfg.SpoolDir, "verbatim-reprocess-")
	if err != nil {
		return fmt.Errorf("processors: spool: %w", err)
	}
	defer os.RemoveAll(dir)
	regCl, err := kafkaclient.New(cfg.Kafka, keyreg.ConsumeOpts()...)
	if err != nil {
		return err
	}
	reg := keyreg.Start(regCl)
	defer reg.Close()
	p := &processor{cfg: Config{Keys: cfg.Keys, Store: cfg.Store, SilentComfortNoise: cfg.SilentComfortNoise, PCI: cfg.PCI, Retention: cfg.Retention,
		Logger: cfg.Logger}, dir: dir, reg: reg}

	sess, err := kafkaclient.NewGroupTransactSession(cfg.Kafka,
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(schemas.TopicRecordings),
		kgo.TransactionalID(group), kgo.TransactionTimeout(cfg.TransactionTimeout),
		// One process runs a job: static membership lets a restarted
		// run take the partitions at once, not after a session timeout.
		kgo.InstanceID(group),
		kgo.RequireStableFetchOffsets(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer sess.Close()
	// Fence an earlier run of the job now (see Run).
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		return fmt.Errorf("processors: reprocess: transactional id %s: %w", group, err)
	}
	read := map[int32]int64{}
	for p, o := range committed {
		read[p] = o
	}
	triggers := map[int32][]int64{} // per partition, the offsets of the calls to redo, ascending
	for k := range todo {
		triggers[int32(k[0])] = append(triggers[int32(k[0])], k[1])
	}
	for _, offs := range triggers {
		slices.Sort(offs)
	}
	began := time.Now()
	doneHere := 0
	// The job is over once every call to redo is committed, done or
	// failed; the rest of the topic is not read.
	for st.Remaining > 0 {
		fs := sess.PollRecords(ctx, pollSize(triggers, read, cfg.CallsPerTransaction))
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(topic string, part int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", topic, part, err))
		})
		if ferr != nil {
			return ferr
		}
		batch := fs.Records()
		if len(batch) == 0 {
			continue
		}
		ok, redone, failures, err := p.reprocessTxn(ctx, sess, cfg, sel, ends, batch, todo)
		if err != nil {
			return err
		}
		if !ok {
			// Aborted (a rebalance): the session is back at the committed
			// offsets; what was polled comes again.
			continue
		}
		for _, r := range batch {
			read[r.Partition] = max(read[r.Partition], r.Offset+1)
		}
		doneHere += redone
		st.Done += redone
		st.Failed += len(failures)
		for id, why := range failures {
			st.Failures[id] = why
		}
		st.Remaining = st.ToDo - st.Done - st.Failed
		if el := time.Since(began).Seconds(); el > 0 && doneHere > 0 {
			st.Rate = float64(doneHere) / el
			st.ETA = time.Duration(float64(st.Remaining) / st.Rate * float64(time.Second))
		}
		if cfg.Progress != nil && (redone > 0 || len(failures) > 0) {
			cfg.Progress(*st)
		}
	}
	return nil
}

// pollSize is how many records the next poll may bring so that it holds
// at most about perTxn calls to redo: one poll is one transaction (the
// session commits the offsets of everything polled), and a transaction
// redoes whole calls. Wherever the poll's records come from, none of the
// P partitions with calls left gives more than perTxn/P of them (records
// aborted transactions left on the topic can stretch it a little).
func pollSize(triggers map[int32][]int64, read map[int32]int64, perTxn int) int {
	var parts int
	for p, offs := range triggers {
		if i, _ := slices.BinarySearch(offs, read[p]); i < len(offs) {
			parts++
		}
	}
	if parts == 0 {
		return 1000
	}
	k := max(1, (perTxn+parts-1)/parts)
	size := int64(1000)
	for p, offs := range triggers {
		i, _ := slices.BinarySearch(offs, read[p])
		if i+k < len(offs) {
			size = min(size, offs[i+k]-read[p]) // the records before its (k+1)-th call to redo
		}
	}
	return int(max(1, size))
}

// reprocessTxn redoes the planned calls among recs in one transaction
// and commits it with recs' offsets. It returns false if the transaction
// aborted (nothing of it is committed: it is redone).
func (p *processor) reprocessTxn(ctx context.Context, sess *kgo.GroupTransactSession, cfg ReprocessConfig, sel string, ends jobEnds,
	recs []*kgo.Record, todo map[[2]int64]*Planned) (committed bool, redone int, failures map[string]string, err error) {
	var work []*Planned
	for _, r := range recs {
		if r.Offset < ends[r.Partition] && !r.Attrs.IsControl() {
			if pl := todo[[2]int64{int64(r.Partition), r.Offset}]; pl != nil {
				work = append(work, pl)
			}
		}
	}
	if err := sess.Begin(); err != nil {
		return false, 0, nil, fmt.Errorf("processors: begin transaction: %w", err)
	}
	abort := func(err error) (bool, int, map[string]string, error) {
		if _, aerr := sess.End(ctx, kgo.TryAbort); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return false, 0, nil, err
	}
	outs := make([][]*kgo.Record, len(work))
	errs := make([]error, len(work))
	sem := make(chan struct{}, cfg.Workers)
	var wg sync.WaitGroup
	for i, pl := range work {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // joined by wg.Wait below
			defer wg.Done()
			defer func() { <-sem }()
			outs[i], errs[i] = p.redo(ctx, cfg, pl)
		}()
	}
	wg.Wait()
	failures = map[string]string{}
	var recsOut []*kgo.Record
	for i, pl := range work {
		var perm permanent
		switch {
		case errs[i] == nil:
			redone++
			recsOut = append(recsOut, outs[i]...)
		case errors.As(errs[i], &perm):
			// The call cannot be redone (its raw media does not match
			// or open, its key is gone): reported and audited; its
			// current recording stays.
			failures[pl.CallID] = errs[i].Error()
			cfg.Logger.Error("call not reprocessed; its current recording stays", "call", pl.CallID, "recording", pl.RecordingID, "err", errs[i])
			a, err := auditRecord(cfg, pl, verbatimv1.AuditResult_AUDIT_RESULT_ERROR, errs[i].Error())
			if err != nil {
				return abort(err)
			}
			recsOut = append(recsOut, a)
		default:
			return abort(errs[i])
		}
	}
	// Every produce is checked before the commit.
	var mu sync.Mutex
	var refused error
	for _, r := range recsOut {
		sess.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				refused = errors.Join(refused, fmt.Errorf("%s for call %s: %w", schemas.HeaderValue(r.Headers, schemas.HeaderType), r.Key, err))
				mu.Unlock()
			}
		})
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return abort(fmt.Errorf("processors: flush: %w", err))
	}
	mu.Lock()
	err = refused
	mu.Unlock()
	if err != nil {
		return abort(fmt.Errorf("processors: reprocess: a record was refused, so the transaction is aborted: %w", err))
	}
	md := jobCheckpoint(sel, ends)
	cctx := kgo.PreTxnCommitFnContext(ctx, func(req *kmsg.TxnOffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				req.Topics[i].Partitions[j].Metadata = &md
			}
		}
		return nil
	})
	ok, err := sess.End(cctx, kgo.TryCommit)
	if err != nil {
		return false, 0, nil, fmt.Errorf("processors: reprocess: commit: %w", err)
	}
	if !ok {
		return false, 0, nil, nil
	}
	return true, redone, failures, nil
}

// redo records one planned call again from its raw media and returns the
// records announcing it.
func (p *processor) redo(ctx context.Context, cfg ReprocessConfig, pl *Planned) ([]*kgo.Record, error) {
	c, err := p.openRaw(ctx, cfg.Select.Tenant, pl)
	if err != nil {
		return nil, err
	}
	defer c.discard()
	f := finishing{c: c, end: pl.end, again: &again{recordingID: pl.NewRecordingID, rawKey: pl.rawKey, rawSize: pl.rawSize,
		rawSHA256: pl.rawSHA256, digits: pl.failed, retainUntil: pl.retainUntil,
		supersedes: &verbatimv1.Supersession{RecordingId: pl.RecordingID, Reason: pl.Reason, Job: cfg.Job, Generation: pl.Generation}}}
	out, err := p.finish(ctx, f)
	if err != nil {
		return nil, err
	}
	if len(out.recs) == 0 {
		return nil, permanent{errors.New("the call's data key is shredded (erased): there is nothing to record")}
	}
	a, err := auditRecord(cfg, pl, verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS, "")
	if err != nil {
		return nil, err
	}
	return append(out.recs, a), nil
}

// openRaw fetches a call's raw media object into a spool file and counts
// its batches per stream, as the processor does while a call is open.
func (p *processor) openRaw(ctx context.Context, tenant string, pl *Planned) (*openCall, error) {
	rc, _, err := p.cfg.Store.Get(ctx, pl.rawKey)
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, permanent{fmt.Errorf("raw media object %s is not in the store", pl.rawKey)}
	}
	if err != nil {
		return nil, fmt.Errorf("processors: raw media %s: %w", pl.rawKey, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(p.dir, "raw-*")
	if err != nil {
		return nil, fmt.Errorf("processors: spool: %w", err)
	}
	c := &openCall{tenant: tenant, id: pl.CallID, spool: f, streams: map[string]*streamSeen{}}
	h := sha256.New()
	n, err := io.Copy(f, io.TeeReader(rc, h))
	if err != nil {
		c.discard()
		return nil, fmt.Errorf("processors: raw media %s: %w", pl.rawKey, err)
	}
	c.size = n
	if sum := h.Sum(nil); len(pl.rawSHA256) > 0 && string(sum) != string(pl.rawSHA256) {
		c.discard()
		return nil, permanent{fmt.Errorf("raw media object %s does not match the SHA-256 its recording announced (altered or replaced)", pl.rawKey)}
	}
	if err := c.countRaw(); err != nil {
		c.discard()
		return nil, permanent{fmt.Errorf("raw media object %s: %w", pl.rawKey, err)}
	}
	return c, nil
}

// countRaw reads the spool's batches and sets the call's data key and
// per-stream counts.
func (c *openCall) countRaw() error {
	if _, err := c.spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReaderSize(c.spool, 64<<10)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || n > maxBatchBytes {
			return fmt.Errorf("bad frame (%d bytes): %v", n, err)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		h, err := scanBatch(buf)
		if err != nil || string(h.callID) != c.id || !h.sealed {
			return fmt.Errorf("not a sealed PacketBatch of call %s: %v", c.id, err)
		}
		switch {
		case c.keyID == "":
			c.keyID = string(h.keyID)
		case string(h.keyID) != c.keyID:
			return fmt.Errorf("batches sealed under two keys (%s, %s)", c.keyID, h.keyID)
		}
		s := c.streams[string(h.streamID)]
		if s == nil {
			s = &streamSeen{first: h.firstArrival}
			c.streams[string(h.streamID)] = s
		}
		s.next, s.received, s.packets = h.batchIndex+1, s.received+1, s.packets+h.packetCount
		s.first = min(s.first, h.firstArrival)
	}
	if c.keyID == "" {
		return errors.New("no media in it")
	}
	return nil
}

// auditRecord is the audit event of one call redone, or not.
func auditRecord(cfg ReprocessConfig, pl *Planned, result verbatimv1.AuditResult, failure string) (*kgo.Record, error) {
	reason := fmt.Sprintf("job %s: %s supersedes %s: %s", cfg.Job, pl.NewRecordingID, pl.RecordingID, pl.Reason)
	if failure != "" {
		reason = fmt.Sprintf("job %s: %s not superseded: %s", cfg.Job, pl.RecordingID, failure)
	}
	id := schemas.DerivedID(pl.NewRecordingID, "audit", cfg.Job, result.String())
	now := time.Now()
	return schemas.NewRecord(schemas.TopicAudit, []byte(cfg.Select.Tenant),
		schemas.Envelope{ID: id, Tenant: cfg.Select.Tenant, CallID: pl.CallID, OccurredAt: now, Producer: "verbatim-reprocess"},
		&verbatimv1.AuditEvent{EventId: id, OccurredAt: timestamppb.New(now), Tenant: cfg.Select.Tenant, Action: "recording.reprocess", CallId: pl.CallID,
			Actor:  &verbatimv1.Actor{Subject: cfg.Actor, Role: "administrator", Tenant: cfg.Select.Tenant},
			Target: &verbatimv1.Target{Type: "recording", Id: pl.RecordingID}, Result: result, Reason: reason,
			UserAgent: "verbatim-reprocess/" + Revision})
}
