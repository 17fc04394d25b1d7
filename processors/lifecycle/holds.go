package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// HoldRequest places a legal hold on calls of one tenant.
type HoldRequest struct {
	Tenant string
	// HoldID names the hold; a random one when empty.
	HoldID, Label, Reason string
	// CallIDs are held; Party's calls too, those recorded now and later.
	CallIDs []string
	Party   string
	By      Actor
}

// PlaceHold places a hold: recorded on the lifecycle topic with its audit
// event, then the S3 legal hold set on every object of the calls it
// covers now. The hold is in force from its commit: every deletion reads
// the holds first.
func (l *Lifecycle) PlaceHold(ctx context.Context, req HoldRequest) (*verbatimv1.LegalHold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if req.HoldID == "" {
		req.HoldID = schemas.RandomID()
	}
	if err := validID(req.HoldID); err != nil {
		return nil, err
	}
	if len(req.CallIDs) == 0 && req.Party == "" {
		return nil, errors.New("lifecycle: a hold names calls, a party, or both")
	}
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return nil, err
	}
	if h := l.cfg.Registry.Hold(req.Tenant, req.HoldID); h != nil {
		return nil, fmt.Errorf("%w: hold %s exists (%s)", ErrRefused, req.HoldID, h.GetState())
	}
	ids := slices.Clone(req.CallIDs)
	if req.Party != "" {
		found, err := l.FindSubject(ctx, req.Tenant, req.Party)
		if err != nil {
			return nil, err
		}
		for _, id := range found {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	calls, err := l.loadCalls(ctx, req.Tenant, ids)
	if err != nil {
		return nil, err
	}
	h := &verbatimv1.LegalHold{Tenant: req.Tenant, HoldId: req.HoldID, Label: req.Label, Reason: req.Reason, CallIds: ids, Party: req.Party,
		PlacedBy: req.By, PlacedAt: timestamppb.New(l.cfg.Now()), State: verbatimv1.HoldState_HOLD_STATE_PLACED}
	if err := l.commitHold(ctx, h, "hold.place", fmt.Sprintf("%q: %d calls%s", req.Label, len(ids), partyNote(req.Party)), false); err != nil {
		return nil, err
	}
	return h, l.setObjectHolds(ctx, calls, true)
}

func partyNote(p string) string {
	if p == "" {
		return ""
	}
	return " and every call of a party, those recorded later too"
}

func (l *Lifecycle) commitHold(ctx context.Context, h *verbatimv1.LegalHold, action, reason string, refused bool) error {
	var recs []*kgo.Record
	if !refused {
		r, err := l.record(h.GetTenant(), holdKey(h.GetTenant(), h.GetHoldId()), &verbatimv1.LifecycleRecord{Record: &verbatimv1.LifecycleRecord_Hold{Hold: h}})
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	by := h.GetPlacedBy()
	switch action {
	case "hold.release_request":
		by = h.GetReleaseRequestedBy()
	case "hold.release":
		by = h.GetReleasedBy()
	}
	a, err := l.audit(h.GetTenant(), action, by, "hold", h.GetHoldId(), "", reason, refused)
	if err != nil {
		return err
	}
	if err := l.cfg.Writer.Commit(ctx, append(recs, a)...); err != nil {
		return fmt.Errorf("lifecycle: hold %s: %w", h.GetHoldId(), err)
	}
	return nil
}

// setObjectHolds sets (or clears) the S3 legal hold of the calls' objects.
func (l *Lifecycle) setObjectHolds(ctx context.Context, calls []*call, on bool) error {
	for _, c := range calls {
		for _, k := range c.objects {
			if err := l.cfg.Store.SetLegalHold(ctx, k, on); err != nil && !errors.Is(err, objstore.ErrNotFound) {
				return fmt.Errorf("lifecycle: call %s: %w", c.id, err)
			}
		}
	}
	return nil
}

// RequestRelease is the first administrator's half of a hold's release:
// the hold stays in force until another approves it (ApproveRelease).
func (l *Lifecycle) RequestRelease(ctx context.Context, tenant, id string, by Actor) (*verbatimv1.LegalHold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := l.hold(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if h.GetState() != verbatimv1.HoldState_HOLD_STATE_PLACED {
		return nil, fmt.Errorf("%w: hold %s is %s", ErrRefused, id, stateName(h))
	}
	h.State, h.ReleaseRequestedBy, h.ReleaseRequestedAt = verbatimv1.HoldState_HOLD_STATE_RELEASE_REQUESTED, by, timestamppb.New(l.cfg.Now())
	return h, l.commitHold(ctx, h, "hold.release_request", "release asked; in force until another administrator approves", false)
}

// ApproveRelease is the second administrator's half: refused (and
// audited) when by asked for the release itself. Released, the hold keeps
// nothing; the S3 legal hold of its calls' objects is cleared where no
// other hold in force covers them.
func (l *Lifecycle) ApproveRelease(ctx context.Context, tenant, id string, by Actor) (*verbatimv1.LegalHold, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := l.hold(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if h.GetState() != verbatimv1.HoldState_HOLD_STATE_RELEASE_REQUESTED {
		return nil, fmt.Errorf("%w: hold %s is %s: its release must be asked first", ErrRefused, id, stateName(h))
	}
	if by.GetSubject() == h.GetReleaseRequestedBy().GetSubject() {
		refusal := proto.Clone(h).(*verbatimv1.LegalHold)
		refusal.ReleasedBy = by
		reason := "the administrator who asked for the release cannot approve it: a second administrator must"
		if err := l.commitHold(ctx, refusal, "hold.release", reason, true); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	h.State, h.ReleasedBy, h.ReleasedAt = verbatimv1.HoldState_HOLD_STATE_RELEASED, by, timestamppb.New(l.cfg.Now())
	if err := l.commitHold(ctx, h, "hold.release", "released, asked by "+h.GetReleaseRequestedBy().GetSubject(), false); err != nil {
		return nil, err
	}
	calls, err := l.loadCalls(ctx, tenant, existing(ctx, l, tenant, h.GetCallIds()))
	if err != nil {
		return h, err
	}
	var free []*call
	for _, c := range calls {
		if len(l.cfg.Registry.heldBy(tenant, c.id, c.parties)) == 0 {
			free = append(free, c)
		}
	}
	return h, l.setObjectHolds(ctx, free, false)
}

// existing keeps the ids of calls still in search (not erased).
func existing(ctx context.Context, l *Lifecycle, tenant string, ids []string) []string {
	var out []string
	for _, id := range ids {
		if _, err := l.loadCalls(ctx, tenant, []string{id}); err == nil {
			out = append(out, id)
		}
	}
	return out
}

func (l *Lifecycle) hold(ctx context.Context, tenant, id string) (*verbatimv1.LegalHold, error) {
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return nil, err
	}
	h := l.cfg.Registry.Hold(tenant, id)
	if h == nil {
		return nil, fmt.Errorf("%w: no hold %s in tenant %s", ErrNotFound, id, tenant)
	}
	return proto.Clone(h).(*verbatimv1.LegalHold), nil
}

func stateName(h *verbatimv1.LegalHold) string {
	return strings.ToLower(strings.TrimPrefix(h.GetState().String(), "HOLD_STATE_"))
}
