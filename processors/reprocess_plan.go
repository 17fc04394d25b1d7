package processors

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Selection says which calls a reprocess job redoes. Empty fields do not
// filter, but Tenant is required: a job serves one tenant.
type Selection struct {
	Tenant string
	// From and To bound the call's start time, [From, To).
	From, To time.Time
	// CallIDs, if set, are the only calls redone.
	CallIDs []string
	// Codecs, if set: calls with a stream offering one of them (by SDP
	// name, any case: "G729", "opus").
	Codecs []string
	// Statuses, if set: calls whose current recording has one of these
	// completeness statuses (schemas.StatusComplete, StatusPartial,
	// StatusNoAudio), schemas.StatusFailed for a RecordingFailed, or
	// schemas.StatusUnverified (stored before ledgers).
	Statuses []string
	// Failure, if set: calls whose recording failed with a reason
	// containing it.
	Failure string
}

// String describes the selection; its hash binds a job to it.
func (s Selection) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tenant=%s", s.Tenant)
	if !s.From.IsZero() {
		fmt.Fprintf(&b, " from=%s", s.From.UTC().Format(time.RFC3339))
	}
	if !s.To.IsZero() {
		fmt.Fprintf(&b, " to=%s", s.To.UTC().Format(time.RFC3339))
	}
	for _, l := range []struct {
		name string
		vs   []string
	}{{"call", s.CallIDs}, {"codec", s.Codecs}, {"status", s.Statuses}} {
		if len(l.vs) > 0 {
			vs := slices.Clone(l.vs)
			sort.Strings(vs)
			fmt.Fprintf(&b, " %s=%s", l.name, strings.Join(vs, ","))
		}
	}
	if s.Failure != "" {
		fmt.Fprintf(&b, " failure=%q", s.Failure)
	}
	return b.String()
}

// Planned is one recording chain the selection matched: the current
// recording of a call (for a call ingested twice, of each ingest), and
// what the job does with it.
type Planned struct {
	CallID      string    `json:"call_id"`
	RecordingID string    `json:"recording_id"` // the current recording
	StartedAt   time.Time `json:"started_at"`
	// Status of the current recording (complete, partial, no audio,
	// failed) and the codecs its streams offered.
	Status string   `json:"status"`
	Codecs []string `json:"codecs,omitempty"`
	// Reason says why the call is redone ("g729 decoded (stream s1)");
	// Skip, set instead, why it is not.
	Reason string `json:"reason,omitempty"`
	Skip   string `json:"skip,omitempty"`
	// NewRecordingID is the id of the recording redoing it makes.
	NewRecordingID string `json:"new_recording_id,omitempty"`
	// Generation of the new recording (1: the first reprocessing).
	Generation uint32 `json:"generation,omitempty"`
	// Done: an earlier run of this job already redid it.
	Done bool `json:"done,omitempty"`

	partition int32
	offset    int64
	failed    bool
	rawKey    string
	rawSize   uint64
	rawSHA256 []byte
	// retainUntil is the current recording's lock: the new one is kept at
	// least as long.
	retainUntil time.Time
	end         *verbatimv1.MediaEnded
}

// version is one recording event of a chain.
type version struct {
	recordingID, supersedes, processing string
	generation                          uint32
	partition                           int32
	offset                              int64
	stored                              *verbatimv1.RecordingStored
	failed                              *verbatimv1.RecordingFailed
	// inScope: below the job's end offsets. Later events (the job's own
	// output, calls recorded since it started) only say what exists.
	inScope bool
}

func (v *version) startedAt() time.Time {
	if v.stored != nil {
		return v.stored.GetCallStartedAt().AsTime()
	}
	return v.failed.GetCallStartedAt().AsTime()
}

func (v *version) end() *verbatimv1.MediaEnded {
	if v.stored != nil {
		return v.stored.GetMediaEnded()
	}
	return v.failed.GetMediaEnded()
}

func (v *version) status() string {
	if v.failed != nil {
		return schemas.StatusFailed
	}
	if len(v.stored.GetLedgers()) == 0 {
		return schemas.StatusUnverified
	}
	return schemas.Summarize(v.stored.GetLedgers()).Status
}

// chain is the recordings of one call's raw media: the first, and those
// that superseded it.
type chain struct {
	callID   string
	rawKey   string
	versions []*version
}

// current is the chain's recording of the highest generation, the latest
// of them if several (a reprocess interrupted and redone by another job).
func (c *chain) current() *version {
	var cur *version
	for _, v := range c.versions {
		if v.inScope && (cur == nil || v.generation >= cur.generation) {
			cur = v
		}
	}
	return cur
}

// ReprocessedID is the recording id of the call whose raw media is rawKey
// made again with the given processing: the same inputs always give the
// same id, so a second reprocessing with the same code adds nothing.
func ReprocessedID(callID, rawKey, processing string) string {
	return schemas.DerivedID(callID, rawKey, "reprocess/v1", processing)
}

// jobEnds are the offsets of the recordings topic a job reads up to.
type jobEnds map[int32]int64

// MaxPlanned bounds the recordings one job plans (about 1 KiB of memory
// each); a selection matching more is refused, asking for a narrower one.
const MaxPlanned = 1_000_000

// readChains reads the recording events of sel's tenant, calls and time
// range below upTo, oldest first; those below ends are in the job's
// scope. Events that do not decode are counted in bad and skipped.
func readChains(ctx context.Context, cfg kafkaclient.Config, sel Selection, ends, upTo jobEnds, progress func(n int)) (chains map[string]*chain, n, bad int, err error) {
	cl, err := kafkaclient.New(cfg, kgo.ConsumeTopics(schemas.TopicRecordings), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.KeepControlRecords(), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, 0, 0, err
	}
	defer cl.Close()
	starts, _, err := kafkaclient.Bounds(ctx, kadm.NewClient(cl), schemas.TopicRecordings)
	if err != nil {
		return nil, 0, 0, err
	}
	next := map[int32]int64{}
	behind := func() bool {
		for p, e := range upTo {
			s, _ := starts.Lookup(schemas.TopicRecordings, p)
			if e > s.Offset && next[p] < e {
				return true
			}
		}
		return false
	}
	calls := map[string]bool{}
	for _, id := range sel.CallIDs {
		calls[id] = true
	}
	chains = map[string]*chain{}
	versions := 0
	for behind() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, n, bad, fmt.Errorf("processors: read %s: %w", schemas.TopicRecordings, err)
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", topic, p, err))
		})
		if ferr != nil {
			return nil, n, bad, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= upTo[r.Partition] {
				return
			}
			next[r.Partition] = max(next[r.Partition], r.Offset+1)
			if r.Attrs.IsControl() || string(schemas.HeaderValue(r.Headers, schemas.HeaderTenant)) != sel.Tenant ||
				(len(calls) > 0 && !calls[string(r.Key)]) {
				return
			}
			v := &version{partition: r.Partition, offset: r.Offset, inScope: r.Offset < ends[r.Partition]}
			switch string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) {
			case "verbatim.v1.RecordingStored":
				v.stored = &verbatimv1.RecordingStored{}
				if proto.Unmarshal(r.Value, v.stored) != nil {
					bad++
					return
				}
				// What planning needs: the per-source reports only for a
				// recording stored before ledgers.
				v.stored.StreamObjects, v.stored.PlaintextSha256, v.stored.CiphertextSha256 = nil, nil, nil
				if len(v.stored.GetLedgers()) > 0 {
					v.stored.Completeness = nil
				}
				v.recordingID, v.processing = v.stored.GetRecordingId(), v.stored.GetProcessing()
				v.supersedes, v.generation = v.stored.GetSupersedes().GetRecordingId(), v.stored.GetSupersedes().GetGeneration()
			case "verbatim.v1.RecordingFailed":
				v.failed = &verbatimv1.RecordingFailed{}
				if proto.Unmarshal(r.Value, v.failed) != nil {
					bad++
					return
				}
				v.recordingID, v.processing = v.failed.GetRecordingId(), v.failed.GetProcessing()
				v.supersedes, v.generation = v.failed.GetSupersedes().GetRecordingId(), v.failed.GetSupersedes().GetGeneration()
			default:
				return
			}
			if started := v.startedAt(); (!sel.From.IsZero() && started.Before(sel.From)) || (!sel.To.IsZero() && !started.Before(sel.To)) {
				return
			}
			versions++
			if v.inScope {
				n++
			}
			if progress != nil && n%1000 == 0 {
				progress(n)
			}
			callID := string(r.Key)
			raw := v.stored.GetRawObjectKey()
			if v.failed != nil {
				raw = v.failed.GetRawObjectKey()
			}
			id := "raw:" + raw
			if raw == "" {
				id = "recording:" + v.recordingID // no raw media kept (PCI mode)
			}
			c := chains[id]
			if c == nil {
				c = &chain{callID: callID, rawKey: raw}
				chains[id] = c
			}
			c.versions = append(c.versions, v)
		})
		if versions > MaxPlanned {
			return nil, n, bad, fmt.Errorf("processors: reprocess: more than %d recordings in the selection: ask for a shorter time range (--from, --to) or fewer calls", MaxPlanned)
		}
	}
	return chains, n, bad, nil
}

// plan turns the chains into the job's work: the current recording of
// each chain the selection matches, redone or skipped, and why. The
// chains are those of the selection's calls and time range (readChains).
func plan(chains map[string]*chain, fromTopic map[string]*verbatimv1.MediaEnded, sel Selection, processing, reason string, force bool) []Planned {
	var out []Planned
	for _, c := range chains {
		cur := c.current()
		if cur == nil {
			continue // recorded since the job started
		}
		started := cur.startedAt()
		status := cur.status()
		if len(sel.Statuses) > 0 && !slices.Contains(sel.Statuses, status) {
			continue
		}
		if sel.Failure != "" && (cur.failed == nil || !strings.Contains(cur.failed.GetReason(), sel.Failure)) {
			continue
		}
		end := cur.end()
		if end == nil {
			// Recorded before RecordingStored carried it: the first
			// recording of the chain may have it, else the media topic.
			for _, v := range c.versions {
				if e := v.end(); e != nil {
					end = e
				}
			}
		}
		if end == nil {
			end = fromTopic[c.firstID()]
		}
		pl := Planned{CallID: c.callID, RecordingID: cur.recordingID, StartedAt: started, Status: status,
			partition: cur.partition, offset: cur.offset, failed: cur.failed != nil, rawKey: c.rawKey, end: end,
			Generation: cur.generation + 1}
		if cur.stored != nil {
			pl.rawSize, pl.rawSHA256 = cur.stored.GetRawSize(), cur.stored.GetRawSha256()
			if t := cur.stored.GetRetainUntil(); t != nil {
				pl.retainUntil = t.AsTime()
			}
		} else {
			pl.rawSize, pl.rawSHA256 = cur.failed.GetRawSize(), cur.failed.GetRawSha256()
		}
		pl.Codecs = codecNames(end)
		if len(sel.Codecs) > 0 && end != nil && !slices.ContainsFunc(sel.Codecs, func(want string) bool {
			return slices.ContainsFunc(pl.Codecs, func(got string) bool { return strings.EqualFold(got, want) })
		}) {
			continue
		}
		if c.rawKey != "" {
			pl.NewRecordingID = ReprocessedID(c.callID, c.rawKey, processing)
		}
		switch {
		case c.rawKey == "":
			pl.Skip = "no raw media was kept (PCI mode): there is nothing to record again"
		case slices.ContainsFunc(c.versions, func(v *version) bool { return !v.inScope && v.recordingID == pl.NewRecordingID }):
			// Announced after the job's end offsets: by an earlier run of
			// this job.
			pl.Done = true
			for _, v := range c.versions {
				if v.recordingID == pl.NewRecordingID {
					pl.Reason = v.stored.GetSupersedes().GetReason()
				}
			}
		case slices.ContainsFunc(c.versions, func(v *version) bool { return v.recordingID == pl.NewRecordingID }):
			if cur.recordingID == pl.NewRecordingID {
				pl.Skip = "already reprocessed by this processing (" + processing + ")"
			} else {
				pl.Skip = "reprocessed by this processing, then again by another: redoing it would make no new recording"
			}
		case end == nil:
			pl.Skip = "its stream descriptions (MediaEnded) are neither in its recording events nor on the media topic any more"
		default:
			why := whyAgain(cur, end)
			if why == "" && !force {
				if cur.processing == processing {
					pl.Skip = "recorded by this processing already (" + processing + ")"
				} else {
					pl.Skip = "nothing this build would record differently; give a reason and --force to redo it anyway"
				}
				break
			}
			if why == "" {
				why = "redone on request"
			}
			pl.Reason = "reprocessed: " + why
			if reason != "" {
				pl.Reason += " (" + reason + ")"
			}
		}
		out = append(out, pl)
	}
	slices.SortFunc(out, func(a, b Planned) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.CallID+a.RecordingID, b.CallID+b.RecordingID)
	})
	return out
}

func codecNames(end *verbatimv1.MediaEnded) []string {
	var names []string
	for _, s := range end.GetStreams() {
		for _, c := range s.GetCodecs() {
			if n := strings.ToUpper(c.GetName()); n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	return names
}

// whyAgain says what this build records that the recording v lacks: the
// streams whose audio it has not (not decodable then) in a codec this
// build decodes, or the failure to retry. Empty if nothing.
func whyAgain(v *version, end *verbatimv1.MediaEnded) string {
	if v.failed != nil {
		return "retried after the recording failed: " + v.failed.GetReason()
	}
	streams := map[string]*verbatimv1.Stream{}
	for _, s := range end.GetStreams() {
		streams[s.GetStreamId()] = s
	}
	var why []string
	// G.711 was decoded by every build: undecodable packets on a stream
	// that also offers it are of another codec.
	add := func(streamID string) {
		for _, c := range streams[streamID].GetCodecs() {
			if name := decodable(c); name != "" && name != "PCMU" && name != "PCMA" {
				why = append(why, strings.ToLower(name)+" decoded (stream "+streamID+")")
				return
			}
		}
	}
	if ls := v.stored.GetLedgers(); len(ls) > 0 {
		for _, l := range ls {
			if l.GetNotDecodable() > 0 {
				add(l.GetStreamId())
			}
		}
	} else {
		for _, sc := range v.stored.GetCompleteness() {
			if sc.GetNotDecoded() != "" || sc.GetNotDecodable() > 0 {
				add(sc.GetStreamId())
			}
		}
	}
	return strings.Join(why, ", ")
}

// firstID is the id of the chain's first recording, RecordingID(call,
// data key), which names its raw media object too.
func (c *chain) firstID() string {
	return strings.TrimSuffix(path.Base(c.rawKey), ".rtp.sealed")
}

// withoutEnd returns the calls of chains none of whose recording events
// carries the call's MediaEnded.
func withoutEnd(chains map[string]*chain) map[string]bool {
	want := map[string]bool{}
	for _, c := range chains {
		if c.rawKey != "" && !slices.ContainsFunc(c.versions, func(v *version) bool { return v.end() != nil }) {
			want[c.callID] = true
		}
	}
	return want
}

// mediaEndedFromTopic finds, on the media topic while it retains them,
// the MediaEnded of calls whose recording events do not carry it
// (recordings stored before RecordingStored.media_ended existed), by the
// id of the first recording each made: a call ingested twice has two, one
// per data key, and a MediaEnded belongs to the key of the batches before
// it on the call's partition.
func mediaEndedFromTopic(ctx context.Context, cfg kafkaclient.Config, tenant string, want map[string]bool) (map[string]*verbatimv1.MediaEnded, error) {
	found := map[string]*verbatimv1.MediaEnded{}
	if len(want) == 0 {
		return found, nil
	}
	cl, err := kafkaclient.New(cfg, kgo.ConsumeTopics(schemas.TopicMedia), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.KeepControlRecords(), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	starts, ends, err := kafkaclient.Bounds(ctx, kadm.NewClient(cl), schemas.TopicMedia)
	if err != nil {
		return nil, err
	}
	read := kafkaclient.NewProgress()
	keyOf := map[string]string{} // call id -> data key of its last batch
	for !read.Reached(starts, ends) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("processors: read %s: %w", schemas.TopicMedia, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read.Observe(r)
			if r.Attrs.IsControl() || !want[string(r.Key)] || string(schemas.HeaderValue(r.Headers, schemas.HeaderTenant)) != tenant {
				return
			}
			switch string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) {
			case "verbatim.v1.PacketBatch":
				if h, err := scanBatch(r.Value); err == nil && string(h.callID) == string(r.Key) {
					keyOf[string(r.Key)] = string(h.keyID)
				}
			case "verbatim.v1.MediaEnded":
				var me verbatimv1.MediaEnded
				if k := keyOf[string(r.Key)]; k != "" && proto.Unmarshal(r.Value, &me) == nil && me.GetCallId() == string(r.Key) {
					found[RecordingID(me.GetCallId(), k)] = &me
				}
			}
		})
	}
	return found, nil
}

// selectionHash binds a job's committed progress to its selection and
// processing: a job restarted with others would redo another set.
func selectionHash(sel Selection, processing string, force bool, reason string) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%t\x00%s", sel, processing, force, reason)))
	return hex.EncodeToString(sum[:6])
}
