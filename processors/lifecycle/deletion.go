package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// RequestDeletion is the first administrator's half of an early deletion:
// calls to delete inside their retention, where the law allows it (a data
// subject's request). Nothing is deleted until a second administrator
// approves (ApproveDeletion).
func (l *Lifecycle) RequestDeletion(ctx context.Context, tenant string, callIDs []string, reason string, by Actor) (*verbatimv1.EarlyDeletion, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(callIDs) == 0 || reason == "" {
		return nil, errors.New("lifecycle: an early deletion names its calls and the reason the law allows it")
	}
	if _, err := l.loadCalls(ctx, tenant, callIDs); err != nil {
		return nil, err
	}
	d := &verbatimv1.EarlyDeletion{Tenant: tenant, DeletionId: schemas.RandomID(), CallIds: slices.Clone(callIDs), Reason: reason,
		RequestedBy: by, RequestedAt: timestamppb.New(l.cfg.Now())}
	return d, l.commitDeletion(ctx, d, "deletion.request", by, fmt.Sprintf("%d calls; reason: %s; awaits a second administrator", len(callIDs), reason), false)
}

func (l *Lifecycle) commitDeletion(ctx context.Context, d *verbatimv1.EarlyDeletion, action string, by Actor, reason string, refused bool) error {
	a, err := l.audit(d.GetTenant(), action, by, "deletion", d.GetDeletionId(), "", reason, refused)
	if err != nil {
		return err
	}
	recs := append(make([]*kgo.Record, 0, 2), a)
	if !refused {
		r, err := l.record(d.GetTenant(), deletionKey(d.GetTenant(), d.GetDeletionId()), &verbatimv1.LifecycleRecord{Record: &verbatimv1.LifecycleRecord_Deletion{Deletion: d}})
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	if err := l.cfg.Writer.Commit(ctx, recs...); err != nil {
		return fmt.Errorf("lifecycle: deletion %s: %w", d.GetDeletionId(), err)
	}
	return nil
}

// ApproveDeletion is the second administrator's half: refused (and
// audited) when by asked for it. Approved, each call not under a legal
// hold has its keys shredded and its rows deleted; its objects are
// deleted where object lock allows, and the others stay as ciphertext
// until their lock ends, when the expiry job deletes them.
func (l *Lifecycle) ApproveDeletion(ctx context.Context, tenant, id string, by Actor) (*verbatimv1.EarlyDeletion, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return nil, err
	}
	d := l.cfg.Registry.Deletion(tenant, id)
	if d == nil {
		return nil, fmt.Errorf("%w: no early deletion %s in tenant %s", ErrNotFound, id, tenant)
	}
	d = proto.Clone(d).(*verbatimv1.EarlyDeletion)
	if d.GetApprovedBy() != nil {
		return nil, fmt.Errorf("%w: deletion %s was approved by %s already", ErrRefused, id, d.GetApprovedBy().GetSubject())
	}
	if by.GetSubject() == d.GetRequestedBy().GetSubject() {
		reason := "the administrator who asked for the deletion cannot approve it: a second administrator must"
		if err := l.commitDeletion(ctx, d, "deletion.approve", by, reason, true); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	calls, err := l.loadCalls(ctx, tenant, d.GetCallIds())
	if err != nil {
		return nil, err
	}
	keyIDs, err := l.keysOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	d.ApprovedBy, d.ApprovedAt = by, timestamppb.New(l.cfg.Now())
	for _, c := range calls {
		o := l.decide(c)
		if o.GetKind() == verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_HOLD {
			d.Outcomes = append(d.Outcomes, o)
			continue
		}
		o = &verbatimv1.CallOutcome{CallId: c.id} // retention is what this deletion overrides
		if err := l.erase(ctx, c, keyIDs[c.id], verbatimv1.DeletionReason_DELETION_REASON_EARLY_DELETION, id, by, o); err != nil {
			return nil, err
		}
		d.Outcomes = append(d.Outcomes, o)
	}
	if err := l.commitDeletion(ctx, d, "deletion.approve", by, fmt.Sprintf("approved; asked by %s", d.GetRequestedBy().GetSubject()), false); err != nil {
		return nil, err
	}
	return d, search.WaitMutations(ctx, l.cfg.Conn, l.cfg.Database)
}
