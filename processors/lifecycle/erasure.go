package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ErasureRequest asks to erase a data subject's calls in one tenant.
type ErasureRequest struct {
	Tenant string
	// RequestID names the request; a random one when empty. The same id
	// again continues it (a request interrupted is finished).
	RequestID string
	// Subject is a phone number, SIP URI, e-mail address or agent id.
	Subject string
	Reason  string
	By      Actor
}

// Erase erases the subject's calls of the tenant where no legal hold and
// no retention obligation applies. A call under retention is refused
// with the reason (GDPR Art. 17(3)(b)) and its due date: when its lock
// ends the expiry job deletes it. A held call is refused with its holds.
// The request and every outcome are recorded on the lifecycle topic and in
// the audit log.
func (l *Lifecycle) Erase(ctx context.Context, req ErasureRequest) (*verbatimv1.ErasureRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if req.RequestID == "" {
		req.RequestID = schemas.RandomID()
	}
	if err := validID(req.RequestID); err != nil {
		return nil, err
	}
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return nil, err
	}
	ids, err := l.FindSubject(ctx, req.Tenant, req.Subject)
	if err != nil {
		return nil, err
	}
	rec := &verbatimv1.ErasureRecord{Tenant: req.Tenant, RequestId: req.RequestID, Subject: req.Subject, Reason: req.Reason,
		RequestedBy: req.By, RequestedAt: timestamppb.New(l.cfg.Now())}
	if prev := l.cfg.Registry.Erasure(req.Tenant, req.RequestID); prev != nil {
		// Continued: the calls erased before are no longer found; keep
		// their outcomes.
		rec.RequestedAt = prev.GetRequestedAt()
		for _, o := range prev.GetOutcomes() {
			if !slices.Contains(ids, o.GetCallId()) {
				rec.Outcomes = append(rec.Outcomes, o)
			}
		}
	}
	arec, err := l.audit(req.Tenant, "erasure.request", req.By, "erasure", req.RequestID, "",
		fmt.Sprintf("%d calls found; reason: %s", len(ids), req.Reason), false)
	if err != nil {
		return nil, err
	}
	lrec, err := l.record(req.Tenant, erasureKey(req.Tenant, req.RequestID), &verbatimv1.LifecycleRecord{Record: &verbatimv1.LifecycleRecord_Erasure{Erasure: rec}})
	if err != nil {
		return nil, err
	}
	if err := l.cfg.Writer.Commit(ctx, lrec, arec); err != nil {
		return nil, fmt.Errorf("lifecycle: recording the erasure request: %w", err)
	}
	calls, err := l.loadCalls(ctx, req.Tenant, ids)
	if err != nil {
		return nil, err
	}
	keyIDs, err := l.keysOf(ctx, req.Tenant)
	if err != nil {
		return nil, err
	}
	var failed error
	for _, c := range calls {
		o := l.decide(c)
		if o.GetKind() == verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_UNSPECIFIED {
			if err := l.erase(ctx, c, keyIDs[c.id], verbatimv1.DeletionReason_DELETION_REASON_ERASURE_REQUEST, req.RequestID, req.By, o); err != nil {
				failed = err
				break
			}
		} else {
			a, err := l.audit(req.Tenant, "call.erase", req.By, "call", c.id, c.id, "refused for "+req.RequestID+": "+o.GetReason(), true)
			if err != nil {
				return nil, err
			}
			if err := l.cfg.Writer.Commit(ctx, a); err != nil {
				return nil, err
			}
		}
		rec.Outcomes = append(rec.Outcomes, o)
	}
	if failed == nil {
		rec.FinishedAt = timestamppb.New(l.cfg.Now())
	}
	if lrec, err = l.record(req.Tenant, erasureKey(req.Tenant, req.RequestID), &verbatimv1.LifecycleRecord{Record: &verbatimv1.LifecycleRecord_Erasure{Erasure: rec}}); err != nil {
		return nil, err
	}
	if err := l.cfg.Writer.Commit(ctx, lrec); err != nil {
		return nil, errors.Join(failed, fmt.Errorf("lifecycle: recording the erasure's outcomes: %w", err))
	}
	if failed != nil {
		return rec, fmt.Errorf("%w (run the request %s again to finish it)", failed, req.RequestID)
	}
	return rec, search.WaitMutations(ctx, l.cfg.Conn, l.cfg.Database)
}

// decide says whether a call may be erased now: its outcome with Kind
// unset if so, or a refusal with the reason.
func (l *Lifecycle) decide(c *call) *verbatimv1.CallOutcome {
	o := &verbatimv1.CallOutcome{CallId: c.id}
	if holds := l.cfg.Registry.heldBy(c.tenant, c.id, c.parties); len(holds) > 0 || c.held {
		o.Kind, o.HoldIds = verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_HOLD, holds
		o.Reason = fmt.Sprintf("under legal hold %v: nothing of it is deleted while a hold is in force", holds)
		return o
	}
	if now := l.cfg.Now(); c.retainUntil.After(now) {
		o.Kind, o.DueAt = verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_RETENTION, timestamppb.New(c.retainUntil)
		o.Reason = fmt.Sprintf("a retention obligation applies until %s (GDPR Art. 17(3)(b)): the call is erased when it ends, by the expiry job",
			c.retainUntil.UTC().Format(time.DateOnly))
	}
	return o
}

// CallProof is what `verbatim erasure proof` shows for one erased call.
type CallProof struct {
	CallID string `json:"call_id"`
	// Keys: each shredded key and what the registry says of it now
	// ("shredded" when its tombstone is read and nothing unwraps it).
	Keys map[string]string `json:"keys"`
	// SearchRows counts the call's rows left in ClickHouse (0 once the
	// deletion is applied).
	SearchRows uint64 `json:"search_rows"`
	// Objects: each object and what the store says of it: "deleted", or
	// "ciphertext only, locked until ..." when object lock keeps it.
	Objects map[string]string `json:"objects"`
	Erased  bool              `json:"erased"`
}

// Proof is the evidence of an erasure request, call by call.
type Proof struct {
	Request *verbatimv1.ErasureRecord `json:"-"`
	// SubjectRows counts the rows search still holds of the subject's
	// identifier (0 when nothing finds the subject).
	SubjectRows int         `json:"subject_rows"`
	Calls       []CallProof `json:"calls"`
	// KeysGoneWithin is how long, at most, a shredded key's wrapped bytes
	// stay in the keys topic's log (segment.ms + max.compaction.lag.ms).
	KeysGoneWithin time.Duration `json:"-"`
	OK             bool          `json:"ok"`
}

// KeyLookup reads the key registry (keyreg.Registry is one).
type KeyLookup interface {
	Get(ctx context.Context, tenant, id string) (*verbatimv1.DataKey, error)
}

// Prove checks request id of tenant: for each call erased, that every one
// of its data keys is shredded (the registry has its tombstone, so no path
// can unwrap it; where the key manager is given, that a key record still
// there would not unwrap either), that ClickHouse holds none of its rows
// and search finds nothing of the subject, and what is left of its
// objects. OK only if all of that holds.
func (l *Lifecycle) Prove(ctx context.Context, tenant, id string, reg KeyLookup, km keys.Manager) (*Proof, error) {
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return nil, err
	}
	rec := l.cfg.Registry.Erasure(tenant, id)
	if rec == nil {
		return nil, fmt.Errorf("%w: no erasure request %s in tenant %s", ErrNotFound, id, tenant)
	}
	if err := search.WaitMutations(ctx, l.cfg.Conn, l.cfg.Database); err != nil {
		return nil, err
	}
	p := &Proof{Request: rec, OK: rec.GetFinishedAt() != nil, KeysGoneWithin: schemas.KeysSegmentAge + schemas.KeysCompactionLag}
	found, err := l.FindSubject(ctx, tenant, rec.GetSubject())
	if err != nil {
		return nil, err
	}
	for _, f := range found { // calls kept (refused) are still found
		if !refused(rec, f) {
			p.SubjectRows++
			p.OK = false
		}
	}
	db := "`" + l.cfg.Database + "`"
	for _, o := range rec.GetOutcomes() {
		if o.GetKind() != verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED {
			continue
		}
		cp := CallProof{CallID: o.GetCallId(), Keys: map[string]string{}, Objects: map[string]string{}, Erased: true}
		for _, k := range o.GetShreddedKeyIds() {
			dk, err := reg.Get(ctx, tenant, k)
			switch {
			case errors.Is(err, keyreg.ErrShredded):
				cp.Keys[k] = "shredded"
			case err != nil:
				cp.Keys[k] = "not readable: " + err.Error()
				cp.Erased = false
			default:
				cp.Keys[k] = "NOT SHREDDED: the registry still holds it"
				if km != nil {
					if _, uerr := km.UnwrapDataKey(ctx, tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()}); uerr != nil {
						cp.Keys[k] += ", but the key manager refuses to unwrap it"
					}
				}
				cp.Erased = false
			}
		}
		if len(o.GetShreddedKeyIds()) == 0 {
			cp.Erased = false
		}
		for _, t := range search.ErasedTables {
			var n uint64
			if err := l.cfg.Conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+t+" WHERE tenant = ? AND call_id = ?", tenant, o.GetCallId()).Scan(&n); err != nil {
				return nil, fmt.Errorf("lifecycle: proof: %w", err)
			}
			cp.SearchRows += n
		}
		if cp.SearchRows > 0 {
			cp.Erased = false
		}
		for _, k := range append(o.GetDeletedObjects(), o.GetLockedObjects()...) {
			st, err := l.cfg.Store.Stat(ctx, k)
			switch {
			case errors.Is(err, objstore.ErrNotFound):
				cp.Objects[k] = "deleted"
			case err != nil:
				return nil, fmt.Errorf("lifecycle: proof: %w", err)
			case st.RetainUntil.After(l.cfg.Now()) || st.LegalHold:
				cp.Objects[k] = "ciphertext only, its keys shredded; object lock keeps it until " + st.RetainUntil.UTC().Format(time.RFC3339)
			default:
				cp.Objects[k] = "ciphertext only, its keys shredded; its lock has ended: the expiry job deletes it"
			}
		}
		p.OK = p.OK && cp.Erased
		p.Calls = append(p.Calls, cp)
	}
	return p, nil
}

func refused(rec *verbatimv1.ErasureRecord, callID string) bool {
	for _, o := range rec.GetOutcomes() {
		if o.GetCallId() == callID && o.GetKind() != verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED {
			return true
		}
	}
	return false
}
