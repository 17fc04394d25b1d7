package processors

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ReencryptConfig configures `verbatim keys reencrypt`: recordings whose
// data keys are suspected compromised are decrypted and sealed again
// under fresh data keys, and the old keys are shredded.
type ReencryptConfig struct {
	// Kafka reads the key registry and the recordings topic. Required.
	Kafka kafkaclient.Config
	// Writer commits each recording's records. Required unless DryRun.
	Writer lifecycle.Writer
	// Tenant whose recordings. Required.
	Tenant string
	// KeyIDs are the recording data keys suspected compromised; CallIDs
	// take the current recording of each call named. One of them is
	// required.
	KeyIDs, CallIDs []string
	// Reason, the operator's words ("incident 2026-117"). Required.
	Reason string
	// DryRun reports what would be re-encrypted and changes nothing.
	DryRun bool
	// Keys unwraps the old keys and makes the new ones. Required.
	Keys keys.Manager
	// Store holds the recordings. Required.
	Store objstore.Store
	// Actor is who runs the job, for the audit trail.
	Actor string
	// Logger, default discard.
	Logger *slog.Logger
	// Progress, if set, is called after planning and after each recording.
	Progress func(ReencryptStats)
	// Now is the clock, time.Now by default.
	Now func() time.Time
}

// ReencryptStats is how far a job is: Selected = Reencrypted + Skipped +
// Failed + Remaining.
type ReencryptStats struct {
	Selected    int // recordings the selection named
	Reencrypted int // sealed again, announced, old key shredded
	Skipped     int // not to be re-encrypted (each says why)
	Failed      int // could not be: the recording and its key stay as they were
	Remaining   int
}

// Resealed is one recording the job took, and what became of it.
type Resealed struct {
	CallID         string `json:"call_id"`
	RecordingID    string `json:"recording_id"`
	OldKeyID       string `json:"old_key_id"`
	NewRecordingID string `json:"new_recording_id,omitempty"`
	NewKeyID       string `json:"new_key_id,omitempty"`
	// Objects are the new sealed objects (the WAV, streams kept apart).
	Objects []string `json:"objects,omitempty"`
	// OldDeleted are old objects deleted; OldLocked those object lock or a
	// legal hold keeps, as ciphertext whose key is shredded.
	OldDeleted []string `json:"old_deleted,omitempty"`
	OldLocked  []string `json:"old_locked,omitempty"`
	// OldNotDeleted could not be deleted for another reason (logged):
	// ciphertext whose key is gone, which the expiry deletes later.
	OldNotDeleted []string `json:"old_not_deleted,omitempty"`
	Skip          string   `json:"skip,omitempty"`
	Failure       string   `json:"failure,omitempty"`
}

// ReencryptReport is what a job did.
type ReencryptReport struct {
	RunID      string         `json:"run_id"`
	DryRun     bool           `json:"dry_run"`
	Stats      ReencryptStats `json:"stats"`
	Recordings []Resealed     `json:"recordings"`
}

// reencryptReason starts the supersession reason of a re-encrypted
// recording.
const reencryptReason = "re-encrypted"

// Reencrypt runs a re-encryption job to its end.
//
// For each recording selected it unwraps the old data key, streams every
// object of the recording (the WAV and any stream kept in its own codec)
// through decryption and into a new object sealed under a fresh data key,
// locked at least as long as the old one (its legal hold too), reads the
// new objects back and checks their plaintext digests against the ones
// the recording announced. Only then, in one Kafka transaction, it
// commits the new key, a RecordingStored that supersedes the old
// recording (generation + 1, reason "re-encrypted: ..."), a tombstone
// for the old key and the audit event; then it deletes the old objects
// where their lock allows. A job killed mid-way leaves every recording
// either as it was or re-encrypted; run again, it skips those done (their
// key is shredded and a re-encrypted recording supersedes them).
//
// The raw media object, the media topic and sealed metadata are under the
// call's own key, not a recording key: this job does not re-seal them.
func Reencrypt(ctx context.Context, cfg ReencryptConfig) (ReencryptReport, error) {
	if err := cfg.validate(); err != nil {
		return ReencryptReport{}, err
	}
	rep := ReencryptReport{RunID: schemas.RandomID(), DryRun: cfg.DryRun}
	reg, err := keyops.Read(ctx, cfg.Kafka, cfg.Tenant)
	if err != nil {
		return rep, err
	}
	live := map[string]*verbatimv1.DataKey{}
	for _, k := range reg.Keys {
		live[k.GetKeyId()] = k
	}
	only := cfg.CallIDs
	if len(cfg.KeyIDs) > 0 {
		only = nil // a key may seal any call's recording
	}
	recs, err := readRecordings(ctx, cfg.Kafka, cfg.Tenant, only)
	if err != nil {
		return rep, err
	}
	rep.Recordings = selectResealed(recs, live, cfg.KeyIDs, cfg.CallIDs, cfg.Reason)
	st := &rep.Stats
	st.Selected = len(rep.Recordings)
	for _, r := range rep.Recordings {
		if r.Skip != "" {
			st.Skipped++
		}
	}
	st.Remaining = st.Selected - st.Skipped
	if cfg.Progress != nil {
		cfg.Progress(*st)
	}
	if cfg.DryRun {
		return rep, nil
	}
	for i := range rep.Recordings {
		r := &rep.Recordings[i]
		if r.Skip != "" {
			continue
		}
		err := cfg.reseal(ctx, rep.RunID, recs.byID[r.RecordingID], live[r.OldKeyID], r)
		var perm permanent
		switch {
		case err == nil:
			st.Reencrypted++
		case errors.As(err, &perm):
			r.Failure = err.Error()
			st.Failed++
			cfg.Logger.Error("recording not re-encrypted; it and its key stay as they were", "call", r.CallID, "recording", r.RecordingID, "err", err)
		default:
			return rep, err
		}
		st.Remaining--
		if cfg.Progress != nil {
			cfg.Progress(*st)
		}
	}
	if st.Failed > 0 {
		return rep, fmt.Errorf("processors: reencrypt: %d of %d recordings could not be re-encrypted (they and their keys stay as they were)", st.Failed, st.Selected-st.Skipped)
	}
	return rep, nil
}

func (c *ReencryptConfig) validate() error {
	switch {
	case !tenantRE.MatchString(c.Tenant):
		return fmt.Errorf("processors: reencrypt: a tenant is required (got %q)", c.Tenant)
	case len(c.KeyIDs) == 0 && len(c.CallIDs) == 0:
		return errors.New("processors: reencrypt: name the suspected keys (--key) or the calls (--call)")
	case strings.TrimSpace(c.Reason) == "":
		return errors.New("processors: reencrypt: say why the keys are suspected (--reason)")
	case c.Keys == nil || c.Store == nil:
		return errors.New("processors: reencrypt: keys and store are required")
	case !c.DryRun && c.Writer == nil:
		return errors.New("processors: reencrypt: a Kafka writer is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Actor == "" {
		c.Actor = "unknown"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// recordings is a tenant's stored recordings as the recordings topic
// holds them, in topic order per call.
type recordings struct {
	byID map[string]*verbatimv1.RecordingStored
	// supersededBy maps a recording to the one that supersedes it.
	supersededBy map[string]*verbatimv1.RecordingStored
	order        []string // recording ids, as read
}

// readRecordings reads tenant's RecordingStored events (of calls, if
// any are named) to the recordings topic's end.
func readRecordings(ctx context.Context, kcfg kafkaclient.Config, tenant string, calls []string) (*recordings, error) {
	cl, err := kafkaclient.New(kcfg, kafkaclient.FollowOpts(schemas.TopicRecordings)...)
	if err != nil {
		return nil, err
	}
	only := map[string]bool{}
	for _, c := range calls {
		only[c] = true
	}
	out := &recordings{byID: map[string]*verbatimv1.RecordingStored{}, supersededBy: map[string]*verbatimv1.RecordingStored{}}
	var mu sync.Mutex
	f := kafkaclient.Follow(cl, func(r *kgo.Record) error {
		if string(schemas.HeaderValue(r.Headers, schemas.HeaderTenant)) != tenant ||
			string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) != "verbatim.v1.RecordingStored" ||
			(len(only) > 0 && !only[string(r.Key)]) {
			return nil
		}
		ev := &verbatimv1.RecordingStored{}
		if err := proto.Unmarshal(r.Value, ev); err != nil {
			return fmt.Errorf("processors: reencrypt: a RecordingStored at %s/%d offset %d does not decode: %w", r.Topic, r.Partition, r.Offset, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := out.byID[ev.GetRecordingId()]; !dup {
			out.order = append(out.order, ev.GetRecordingId())
		}
		out.byID[ev.GetRecordingId()] = ev
		if s := ev.GetSupersedes().GetRecordingId(); s != "" {
			out.supersededBy[s] = ev
		}
		return nil
	}, schemas.TopicRecordings)
	defer f.Close()
	if err := f.Sync(ctx); err != nil {
		return nil, fmt.Errorf("processors: reencrypt: reading %s: %w", schemas.TopicRecordings, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// current follows id's supersessions to the recording that plays now.
func (rs *recordings) current(id string) *verbatimv1.RecordingStored {
	cur := rs.byID[id]
	for range len(rs.byID) { // bounded: a chain cannot be longer
		next := rs.supersededBy[cur.GetRecordingId()]
		if next == nil {
			break
		}
		cur = next
	}
	return cur
}

// selectResealed names the recordings a job takes, each with why it is
// skipped if it is: the current recordings of the calls named, and the
// recordings sealed under the keys named. A call whose current recording
// was re-encrypted for the same reason is done (a job run again).
func selectResealed(rs *recordings, live map[string]*verbatimv1.DataKey, keyIDs, callIDs []string, reason string) []Resealed {
	var out []Resealed
	seen := map[string]bool{}
	byKey := map[string]*verbatimv1.RecordingStored{}
	for _, id := range rs.order {
		byKey[rs.byID[id].GetKey().GetKeyId()] = rs.byID[id]
	}
	add := func(ev *verbatimv1.RecordingStored, keyID, skip string) {
		if ev != nil {
			if seen[ev.GetRecordingId()] {
				return
			}
			seen[ev.GetRecordingId()] = true
		}
		r := Resealed{CallID: ev.GetCallId(), RecordingID: ev.GetRecordingId(), OldKeyID: keyID, Skip: skip}
		if ev != nil && skip == "" {
			switch k := live[keyID]; {
			case k == nil:
				if next := rs.supersededBy[ev.GetRecordingId()]; strings.HasPrefix(next.GetSupersedes().GetReason(), reencryptReason) {
					r.Skip = "already re-encrypted as " + next.GetRecordingId() + " (its key " + next.GetKey().GetKeyId() + "); key " + keyID + " is shredded"
				} else {
					r.Skip = "key " + keyID + " is not in the tenant's key registry: shredded (the call erased), so there is nothing left to re-encrypt"
				}
			case rs.current(ev.GetRecordingId()) != ev:
				r.Skip = "superseded by recording " + rs.current(ev.GetRecordingId()).GetRecordingId() +
					": only a call's current recording is re-encrypted (a superseded one keeps its key until it expires or is erased)"
			}
		}
		out = append(out, r)
	}
	for _, k := range keyIDs {
		ev := byKey[k]
		switch dk := live[k]; {
		case ev != nil:
			add(ev, k, "")
		case dk != nil && dk.GetPurpose() == "call":
			add(nil, k, "key "+k+" is call "+dk.GetCallId()+"'s own key: it seals the captured media and metadata, not a recording; "+
				"re-encrypting those is not supported (erase the call to shred it)")
		default:
			add(nil, k, "key "+k+" seals no recording of the tenant")
		}
	}
	for _, c := range callIDs {
		var found bool
		for _, id := range rs.order {
			ev := rs.byID[id]
			if ev.GetCallId() == c && ev.GetSupersedes() == nil {
				found = true
				cur := rs.current(id)
				skip := ""
				if cur.GetSupersedes().GetReason() == reencryptReason+": "+reason {
					skip = "already re-encrypted as " + cur.GetRecordingId() + " for this reason (a job run again)"
				}
				add(cur, cur.GetKey().GetKeyId(), skip)
			}
		}
		if !found {
			r := Resealed{CallID: c, Skip: "the call has no stored recording in the tenant"}
			out = append(out, r)
		}
	}
	return out
}

// reseal re-encrypts one recording; see Reencrypt. An error that is
// permanent leaves the recording as it was.
func (cfg *ReencryptConfig) reseal(ctx context.Context, runID string, old *verbatimv1.RecordingStored, oldKey *verbatimv1.DataKey, r *Resealed) error {
	oldPlain, err := cfg.Keys.UnwrapDataKey(ctx, cfg.Tenant, keys.Wrapped{KEKName: oldKey.GetKekName(), KEKVersion: oldKey.GetKekVersion(), Ciphertext: oldKey.GetWrappedDek()})
	if err != nil {
		return permanent{fmt.Errorf("the old key %s does not unwrap: %w", oldKey.GetKeyId(), err)}
	}
	type object struct {
		oldKey, newKey string
		size           uint64
		plainSHA       []byte
		newSHA         []byte
		newSize        uint64
	}
	newID := schemas.DerivedID(old.GetRecordingId(), "reencrypt/v1", runID)
	newKey, _ := ObjectKeys(cfg.Tenant, old.GetCallId(), newID, old.GetCallStartedAt().AsTime())
	objs := []*object{{oldKey: old.GetObjectKey(), newKey: newKey, size: old.GetPlaintextSize(), plainSHA: old.GetPlaintextSha256()}}
	for _, s := range old.GetStreamObjects() {
		objs = append(objs, &object{oldKey: s.GetObjectKey(), newKey: strings.TrimSuffix(newKey, ".wav.sealed") + "-" + s.GetStreamId() + ".opus.sealed",
			size: s.GetPlaintextSize(), plainSHA: s.GetPlaintextSha256()})
	}
	// The new objects are kept at least as long as the old ones.
	retain, held := old.GetRetainUntil().AsTime(), false
	if old.GetRetainUntil() == nil {
		retain = time.Time{}
	}
	for _, o := range objs {
		info, err := cfg.Store.Stat(ctx, o.oldKey)
		if errors.Is(err, objstore.ErrNotFound) {
			return permanent{fmt.Errorf("object %s is not in the store", o.oldKey)}
		}
		if err != nil {
			return fmt.Errorf("processors: reencrypt: %s: %w", o.oldKey, err)
		}
		if info.RetainUntil.After(retain) {
			retain = info.RetainUntil
		}
		held = held || info.LegalHold
	}
	dk, err := cfg.Keys.GenerateDataKey(ctx, cfg.Tenant)
	if err != nil {
		return fmt.Errorf("processors: reencrypt: a new data key: %w", err)
	}
	for _, o := range objs {
		if err := reseal1(ctx, cfg.Store, cfg.Tenant, oldPlain, dk.Plaintext, o.oldKey, o.newKey, o.size, o.plainSHA, retain); err != nil {
			return err
		}
		sum, n, err := verifySealed(ctx, cfg.Store, cfg.Tenant, dk.Plaintext, o.newKey, o.plainSHA)
		if err != nil {
			return err
		}
		o.newSHA, o.newSize = sum, n
		if held {
			if err := cfg.Store.SetLegalHold(ctx, o.newKey, true); err != nil {
				return fmt.Errorf("processors: reencrypt: legal hold on %s: %w", o.newKey, err)
			}
		}
		r.Objects = append(r.Objects, o.newKey)
	}
	now := cfg.Now()
	ev := proto.Clone(old).(*verbatimv1.RecordingStored)
	ev.RecordingId, ev.ObjectKey, ev.CiphertextSha256, ev.CiphertextSize = newID, objs[0].newKey, objs[0].newSHA, objs[0].newSize
	for i, s := range ev.StreamObjects {
		s.ObjectKey, s.CiphertextSha256, s.CiphertextSize = objs[i+1].newKey, objs[i+1].newSHA, objs[i+1].newSize
	}
	newKeyID := "dk-" + newID
	ev.Key = &verbatimv1.KeyReference{KeyId: newKeyID, KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion}
	ev.StoredAt = timestamppb.New(now)
	if !retain.IsZero() {
		ev.RetainUntil = timestamppb.New(retain)
	}
	ev.Supersedes = &verbatimv1.Supersession{RecordingId: old.GetRecordingId(), Reason: reencryptReason + ": " + cfg.Reason,
		Job: "reencrypt-" + runID, Generation: old.GetSupersedes().GetGeneration() + 1}
	env := func(what string) schemas.Envelope {
		return schemas.Envelope{ID: schemas.DerivedID(newID, what), Tenant: cfg.Tenant, CallID: old.GetCallId(), OccurredAt: now, Producer: "verbatim-reencrypt"}
	}
	keyRec, err := schemas.NewRecord(schemas.TopicKeys, []byte(newKeyID), env("key"),
		&verbatimv1.DataKey{KeyId: newKeyID, Tenant: cfg.Tenant, WrappedDek: dk.Wrapped.Ciphertext, KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion,
			KeyManager: cfg.Keys.Kind(), CreatedAt: timestamppb.New(now), Purpose: "recording", CallId: old.GetCallId()})
	if err != nil {
		return err
	}
	storedRec, err := schemas.NewRecord(schemas.TopicRecordings, []byte(old.GetCallId()), env("stored"), ev)
	if err != nil {
		return err
	}
	auditID := schemas.DerivedID(newID, "audit")
	auditRec, err := schemas.NewRecord(schemas.TopicAudit, []byte(cfg.Tenant), schemas.Envelope{ID: auditID, Tenant: cfg.Tenant, CallID: old.GetCallId(), OccurredAt: now, Producer: "verbatim-reencrypt"},
		&verbatimv1.AuditEvent{EventId: auditID, OccurredAt: timestamppb.New(now), Tenant: cfg.Tenant, Action: "recording.reencrypt", CallId: old.GetCallId(),
			Actor:  &verbatimv1.Actor{Subject: cfg.Actor, Role: "administrator", Tenant: cfg.Tenant},
			Target: &verbatimv1.Target{Type: "recording", Id: old.GetRecordingId()}, Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS,
			Reason: fmt.Sprintf("%s: %d objects sealed again under key %s as recording %s (plaintext SHA-256 checked); key %s shredded",
				cfg.Reason, len(objs), newKeyID, newID, oldKey.GetKeyId()),
			UserAgent: "verbatim-reencrypt/" + Revision, Recording: ev})
	if err != nil {
		return err
	}
	tomb := &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(oldKey.GetKeyId())}
	if err := cfg.Writer.Commit(ctx, keyRec, storedRec, tomb, auditRec); err != nil {
		return fmt.Errorf("processors: reencrypt: recording %s: committing: %w", old.GetRecordingId(), err)
	}
	r.NewRecordingID, r.NewKeyID = newID, newKeyID
	for _, o := range objs {
		switch err := cfg.Store.Delete(ctx, o.oldKey); {
		case err == nil:
			r.OldDeleted = append(r.OldDeleted, o.oldKey)
		case errors.Is(err, objstore.ErrRetained) || errors.Is(err, objstore.ErrHeld):
			r.OldLocked = append(r.OldLocked, o.oldKey)
		case errors.Is(err, objstore.ErrNotFound):
		default:
			// Re-encrypted and its key shredded: what is left is ciphertext
			// without a key; the expiry deletes it later.
			cfg.Logger.Warn("old object of a re-encrypted recording not deleted", "object", o.oldKey, "err", err)
			r.OldNotDeleted = append(r.OldNotDeleted, o.oldKey)
		}
	}
	slices.Sort(r.OldDeleted)
	slices.Sort(r.OldLocked)
	return nil
}

// reseal1 streams one sealed object through decryption under oldKey into
// a new object sealed under newKey, and checks the plaintext's digest.
func reseal1(ctx context.Context, store objstore.Store, tenant string, oldKey, newKey []byte, from, to string, size uint64, plainSHA []byte, retain time.Time) error {
	rc, _, err := store.Get(ctx, from)
	if errors.Is(err, objstore.ErrNotFound) {
		return permanent{fmt.Errorf("object %s is not in the store", from)}
	}
	if err != nil {
		return fmt.Errorf("processors: reencrypt: %s: %w", from, err)
	}
	defer rc.Close()
	plain, err := OpenRecording(rc, oldKey, tenant, from)
	if err != nil {
		return permanent{fmt.Errorf("object %s does not open under its key: %w", from, err)}
	}
	pSum, _, pN, _, err := sealAndPut(ctx, store, newKey, tenant, to, plain, int64(size), retain)
	if err != nil {
		return permanent{fmt.Errorf("sealing %s again as %s: %w", from, to, err)}
	}
	if uint64(pN) != size || (len(plainSHA) > 0 && !bytes.Equal(pSum, plainSHA)) {
		return permanent{fmt.Errorf("object %s opened to %d bytes of SHA-256 %x; its recording announced %d bytes of %x", from, pN, pSum, size, plainSHA)}
	}
	return nil
}

// verifySealed reads a stored object back, opens it under key and checks
// its plaintext digest; it returns the ciphertext's digest and size.
func verifySealed(ctx context.Context, store objstore.Store, tenant string, key []byte, objectKey string, plainSHA []byte) ([]byte, uint64, error) {
	rc, _, err := store.Get(ctx, objectKey)
	if err != nil {
		return nil, 0, fmt.Errorf("processors: reencrypt: reading back %s: %w", objectKey, err)
	}
	defer rc.Close()
	cs := sha256.New()
	cn := &countingWriter{}
	tee := io.TeeReader(rc, io.MultiWriter(cs, cn))
	plain, err := OpenRecording(tee, key, tenant, objectKey)
	if err != nil {
		return nil, 0, permanent{fmt.Errorf("the new object %s does not open: %w", objectKey, err)}
	}
	ps := sha256.New()
	if _, err := io.Copy(ps, plain); err != nil {
		return nil, 0, permanent{fmt.Errorf("the new object %s does not open: %w", objectKey, err)}
	}
	if len(plainSHA) > 0 && !bytes.Equal(ps.Sum(nil), plainSHA) {
		return nil, 0, permanent{fmt.Errorf("the new object %s opens to other bytes than the recording's", objectKey)}
	}
	if _, err := io.Copy(io.Discard, tee); err != nil { // the ciphertext's digest covers all of it
		return nil, 0, fmt.Errorf("processors: reencrypt: reading back %s: %w", objectKey, err)
	}
	return cs.Sum(nil), cn.n, nil
}

type countingWriter struct{ n uint64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += uint64(len(p))
	return len(p), nil
}
