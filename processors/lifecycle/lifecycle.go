package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Writer commits records in one Kafka transaction, checking every
// produce first: all of them, or none (api.KafkaWriter is one).
type Writer interface {
	Commit(ctx context.Context, recs ...*kgo.Record) error
}

// Config is what the lifecycle jobs act on.
type Config struct {
	// Kafka reads the key registry (keyops.Read).
	Kafka  kafkaclient.Config
	Writer Writer
	// Registry is the lifecycle topic's view (StartRegistry).
	Registry *Registry
	Conn     driver.Conn
	Database string
	Store    objstore.Store
	// Producer names the role in events' envelopes, e.g.
	// "verbatim-lifecycle" or "verbatim-api".
	Producer string
	// Now is the clock, time.Now by default.
	Now func() time.Time
}

// Lifecycle runs holds, erasures, early deletions and expiry.
type Lifecycle struct {
	cfg Config
	// one decision at a time per process: two requests never race for
	// one call between reading the holds and acting on them
	mu sync.Mutex
}

// New returns a Lifecycle.
func New(cfg Config) (*Lifecycle, error) {
	if cfg.Writer == nil || cfg.Registry == nil || cfg.Conn == nil || cfg.Store == nil {
		return nil, errors.New("lifecycle: a Kafka writer, the lifecycle registry, ClickHouse and the object store are required")
	}
	if err := search.ValidDatabase(cfg.Database); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Producer == "" {
		cfg.Producer = "verbatim-lifecycle"
	}
	return &Lifecycle{cfg: cfg}, nil
}

// Registry is the lifecycle topic's view the jobs use.
func (l *Lifecycle) Registry() *Registry { return l.cfg.Registry }

// ErrRefused is wrapped by refusals that are decisions, not failures: a
// second approval by the first administrator, a hold not in force.
var ErrRefused = errors.New("lifecycle: refused")

// ErrNotFound is wrapped when a hold, deletion, request or call named does
// not exist in the tenant.
var ErrNotFound = errors.New("lifecycle: not found")

// call is what a decision about one call needs.
type call struct {
	tenant, id string
	// parties: numbers and URIs of its participants, ANI and DNIS
	parties []string
	// objects: every object of every recording (superseded ones too):
	// WAV, raw media, streams kept apart
	objects []string
	// retainUntil: the latest lock of its objects, as object storage
	// says (zero: none)
	retainUntil time.Time
	held        bool // an object has its S3 legal hold set
}

// loadCalls reads the calls named (which must exist in tenant) with their
// parties and objects, and each object's lock from the store.
func (l *Lifecycle) loadCalls(ctx context.Context, tenant string, ids []string) ([]*call, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	db := "`" + l.cfg.Database + "`"
	args := []any{tenant}
	for _, id := range ids {
		args = append(args, id)
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",") + ")"
	byID := map[string]*call{}
	rows, err := l.cfg.Conn.Query(ctx, "SELECT call_id FROM "+db+".calls FINAL WHERE tenant = ? AND call_id IN "+in, args...)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: calls: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		byID[id] = &call{tenant: tenant, id: id}
	}
	rows.Close()
	var missing []string
	for _, id := range ids {
		if byID[id] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: no call %s in tenant %s", ErrNotFound, strings.Join(missing, ", "), tenant)
	}
	for _, q := range []string{
		"SELECT call_id, number, uri FROM " + db + ".participants FINAL WHERE tenant = ? AND call_id IN " + in,
		"SELECT call_id, ani, dnis FROM " + db + ".metadata FINAL WHERE tenant = ? AND call_id IN " + in,
	} {
		rows, err := l.cfg.Conn.Query(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("lifecycle: parties: %w", err)
		}
		for rows.Next() {
			var id, a, b string
			if err := rows.Scan(&id, &a, &b); err != nil {
				rows.Close()
				return nil, err
			}
			for _, p := range []string{a, b} {
				if p != "" && !slices.Contains(byID[id].parties, p) {
					byID[id].parties = append(byID[id].parties, p)
				}
			}
		}
		rows.Close()
	}
	rows, err = l.cfg.Conn.Query(ctx, "SELECT call_id, object_key, raw_object_key, stream_objects FROM "+db+".recordings FINAL WHERE tenant = ? AND call_id IN "+in, args...)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: recordings: %w", err)
	}
	for rows.Next() {
		var id, obj, raw, streams string
		if err := rows.Scan(&id, &obj, &raw, &streams); err != nil {
			rows.Close()
			return nil, err
		}
		c := byID[id]
		keys := []string{obj, raw}
		if streams != "" {
			var ev verbatimv1.RecordingStored
			if err := protojson.Unmarshal([]byte(streams), &ev); err != nil {
				rows.Close()
				return nil, fmt.Errorf("lifecycle: call %s: stream objects: %w", id, err)
			}
			for _, so := range ev.GetStreamObjects() {
				keys = append(keys, so.GetObjectKey())
			}
		}
		for _, k := range keys {
			if k != "" && !slices.Contains(c.objects, k) {
				c.objects = append(c.objects, k)
			}
		}
	}
	rows.Close()
	out := make([]*call, 0, len(ids))
	for _, id := range ids {
		c := byID[id]
		for _, k := range c.objects {
			st, err := l.cfg.Store.Stat(ctx, k)
			if errors.Is(err, objstore.ErrNotFound) {
				continue // already gone
			}
			if err != nil {
				return nil, fmt.Errorf("lifecycle: call %s: %w", id, err)
			}
			if st.RetainUntil.After(c.retainUntil) {
				c.retainUntil = st.RetainUntil
			}
			c.held = c.held || st.LegalHold
		}
		out = append(out, c)
	}
	return out, nil
}

// FindSubject lists tenant's calls of a data subject: a participant whose
// number or SIP URI is subject (an e-mail address or user@host matches
// sip:, sips: and mailto: URIs of it), or contact-centre data whose ANI,
// DNIS or agent id is.
func (l *Lifecycle) FindSubject(ctx context.Context, tenant, subject string) ([]string, error) {
	subject = strings.TrimSpace(subject)
	if subject == "" || len(subject) > 256 {
		return nil, errors.New("lifecycle: the subject is a phone number, SIP URI, e-mail address or agent id (1 to 256 bytes)")
	}
	uris := []string{subject}
	if !strings.Contains(subject, ":") && strings.Contains(subject, "@") {
		uris = append(uris, "sip:"+subject, "sips:"+subject, "mailto:"+subject)
	}
	db := "`" + l.cfg.Database + "`"
	notErased := " AND call_id NOT IN (SELECT call_id FROM " + db + ".erased_calls WHERE tenant = ?)"
	var ids []string
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"SELECT DISTINCT call_id FROM " + db + ".participants FINAL WHERE tenant = ? AND (number = ? OR uri IN (?, ?, ?, ?))" + notErased,
			[]any{tenant, subject, uris[0], at(uris, 1), at(uris, 2), at(uris, 3), tenant}},
		{"SELECT DISTINCT call_id FROM " + db + ".metadata FINAL WHERE tenant = ? AND (ani = ? OR dnis = ? OR agent_id = ?)" + notErased,
			[]any{tenant, subject, subject, subject, tenant}},
	} {
		rows, err := l.cfg.Conn.Query(ctx, q.sql, q.args...)
		if err != nil {
			return nil, fmt.Errorf("lifecycle: finding the subject's calls: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// at is uris[i], or the first when there are fewer (a repeated value
// matches nothing more).
func at(uris []string, i int) string {
	if i < len(uris) {
		return uris[i]
	}
	return uris[0]
}

// audit is one audit event of a lifecycle step.
func (l *Lifecycle) audit(tenant, action string, by *verbatimv1.Actor, targetType, targetID, callID, reason string, refused bool) (*kgo.Record, error) {
	ev := &verbatimv1.AuditEvent{EventId: schemas.RandomID(), OccurredAt: timestamppb.New(l.cfg.Now()), Actor: by, Tenant: tenant,
		Action: action, Target: &verbatimv1.Target{Type: targetType, Id: targetID}, CallId: callID,
		Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS, Reason: reason}
	if refused {
		ev.Result = verbatimv1.AuditResult_AUDIT_RESULT_DENIED
	}
	return schemas.AuditRecord(ev, l.cfg.Producer)
}

// record is a lifecycle topic record.
func (l *Lifecycle) record(tenant, key string, lr *verbatimv1.LifecycleRecord) (*kgo.Record, error) {
	return schemas.NewRecord(schemas.TopicLifecycle, []byte(key), schemas.Envelope{ID: schemas.RandomID(), Tenant: tenant,
		OccurredAt: l.cfg.Now(), Producer: l.cfg.Producer}, lr)
}

// keysOf are the data keys of tenant's calls, by call: the call's own and
// its recordings'.
func (l *Lifecycle) keysOf(ctx context.Context, tenant string) (map[string][]string, error) {
	reg, err := keyops.Read(ctx, l.cfg.Kafka, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, k := range reg.Keys {
		if k.GetCallId() != "" {
			out[k.GetCallId()] = append(out[k.GetCallId()], k.GetKeyId())
		}
	}
	return out, nil
}

// erase removes one call: its keys shredded with its CallErased and audit
// event in one transaction, then its rows deleted, then its objects
// deleted except those object lock keeps. o is filled in.
func (l *Lifecycle) erase(ctx context.Context, c *call, keyIDs []string, reason verbatimv1.DeletionReason, requestID string,
	by *verbatimv1.Actor, o *verbatimv1.CallOutcome) error {
	now := l.cfg.Now()
	slices.Sort(keyIDs)
	var recs []*kgo.Record
	for _, k := range keyIDs {
		recs = append(recs, &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(k)}) // a tombstone
	}
	ev, err := schemas.NewRecord(schemas.TopicRecordings, []byte(c.id), schemas.Envelope{ID: schemas.DerivedID(requestID, c.id, "erased"),
		Tenant: c.tenant, CallID: c.id, OccurredAt: now, Producer: l.cfg.Producer},
		&verbatimv1.CallErased{CallId: c.id, Reason: reason, RequestId: requestID, ErasedAt: timestamppb.New(now), ShreddedKeyIds: keyIDs})
	if err != nil {
		return err
	}
	arec, err := l.audit(c.tenant, "call.erase", by, "call", c.id, c.id,
		fmt.Sprintf("%s by %s: %d data keys shredded", strings.ToLower(strings.TrimPrefix(reason.String(), "DELETION_REASON_")), requestID, len(keyIDs)), false)
	if err != nil {
		return err
	}
	if err := l.cfg.Writer.Commit(ctx, append(recs, ev, arec)...); err != nil {
		return fmt.Errorf("lifecycle: call %s: shredding its keys: %w", c.id, err)
	}
	o.Kind, o.ShreddedKeyIds = verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED, keyIDs
	if err := search.EraseRows(ctx, l.cfg.Conn, l.cfg.Database, c.tenant, c.id, requestID, reason.String(), now); err != nil {
		return err
	}
	for _, k := range c.objects {
		switch err := l.cfg.Store.Delete(ctx, k); {
		case err == nil:
			o.DeletedObjects = append(o.DeletedObjects, k)
		case errors.Is(err, objstore.ErrNotFound):
		case errors.Is(err, objstore.ErrRetained) || errors.Is(err, objstore.ErrHeld):
			o.LockedObjects = append(o.LockedObjects, k)
		default:
			return fmt.Errorf("lifecycle: call %s: its keys are shredded and its rows deleted, but: %w", c.id, err)
		}
	}
	return nil
}

// Actor is who acts: an administrator through the API, or an operator.
type Actor = *verbatimv1.Actor

// validID accepts ids of holds, deletions and requests.
func validID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\x00 ") {
		return fmt.Errorf("lifecycle: id %q: 1 to 128 bytes, no slash or space", id)
	}
	return nil
}
