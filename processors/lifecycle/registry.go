// Package lifecycle ends recordings' lives as the law asks: legal holds
// that stop every deletion, erasure of a data subject's calls (GDPR
// Art. 17) where no retention obligation or hold applies, early deletion
// inside retention with two administrators' approval, and the expiry of
// recordings whose retention has ended.
//
// Erasing a call shreds its data keys (tombstones on the compacted keys
// topic, committed with a CallErased event and the audit event in one
// transaction), deletes its rows from ClickHouse, and deletes its objects
// where object lock allows; objects the lock keeps are ciphertext whose
// keys are gone. Every decision reads the lifecycle topic (holds,
// deletions, erasure requests) to its end first.
package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Registry is the lifecycle topic as read so far: every hold, early
// deletion and erasure request by its key. Safe for concurrent use.
type Registry struct {
	f  *kafkaclient.Follower
	mu sync.Mutex
	// by record key ("hold/TENANT/ID"...)
	recs map[string]*verbatimv1.LifecycleRecord
}

// ConsumeOpts are the options a registry's client needs.
func ConsumeOpts() []kgo.Opt { return kafkaclient.FollowOpts(schemas.TopicLifecycle) }

// StartRegistry follows the lifecycle topic from its start with cl (made
// with ConsumeOpts, no group), which it closes on Close.
func StartRegistry(cl *kgo.Client) *Registry {
	r := &Registry{recs: map[string]*verbatimv1.LifecycleRecord{}}
	r.f = kafkaclient.Follow(cl, r.apply, schemas.TopicLifecycle)
	return r
}

func (r *Registry) apply(rec *kgo.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.Value == nil {
		delete(r.recs, string(rec.Key))
		return nil
	}
	lr := &verbatimv1.LifecycleRecord{}
	if err := proto.Unmarshal(rec.Value, lr); err != nil {
		return fmt.Errorf("lifecycle: %s offset %d: not a LifecycleRecord: %w", rec.Topic, rec.Offset, err)
	}
	r.recs[string(rec.Key)] = lr
	return nil
}

// Sync returns once every record committed before the call is read.
func (r *Registry) Sync(ctx context.Context) error {
	if err := r.f.Sync(ctx); err != nil {
		return fmt.Errorf("lifecycle: the holds and requests (%s) cannot be read: %w", schemas.TopicLifecycle, err)
	}
	return nil
}

// Close stops following.
func (r *Registry) Close() { r.f.Close() }

func holdKey(tenant, id string) string     { return "hold/" + tenant + "/" + id }
func deletionKey(tenant, id string) string { return "deletion/" + tenant + "/" + id }
func erasureKey(tenant, id string) string  { return "erasure/" + tenant + "/" + id }

// Hold is tenant's hold id, nil if there is none.
func (r *Registry) Hold(tenant, id string) *verbatimv1.LegalHold {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[holdKey(tenant, id)].GetHold()
}

// Deletion is tenant's early deletion id, nil if there is none.
func (r *Registry) Deletion(tenant, id string) *verbatimv1.EarlyDeletion {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[deletionKey(tenant, id)].GetDeletion()
}

// Erasure is tenant's erasure request id, nil if there is none.
func (r *Registry) Erasure(tenant, id string) *verbatimv1.ErasureRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[erasureKey(tenant, id)].GetErasure()
}

// Holds are tenant's holds (released ones too), by id.
func (r *Registry) Holds(tenant string) []*verbatimv1.LegalHold {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*verbatimv1.LegalHold
	for k, lr := range r.recs {
		if strings.HasPrefix(k, "hold/"+tenant+"/") {
			out = append(out, lr.GetHold())
		}
	}
	slices.SortFunc(out, func(a, b *verbatimv1.LegalHold) int { return strings.Compare(a.GetHoldId(), b.GetHoldId()) })
	return out
}

// Deletions are tenant's early deletions, by id.
func (r *Registry) Deletions(tenant string) []*verbatimv1.EarlyDeletion {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*verbatimv1.EarlyDeletion
	for k, lr := range r.recs {
		if strings.HasPrefix(k, "deletion/"+tenant+"/") {
			out = append(out, lr.GetDeletion())
		}
	}
	slices.SortFunc(out, func(a, b *verbatimv1.EarlyDeletion) int { return strings.Compare(a.GetDeletionId(), b.GetDeletionId()) })
	return out
}

// erasures are tenant's erasure requests.
func (r *Registry) erasures(tenant string) []*verbatimv1.ErasureRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*verbatimv1.ErasureRecord
	for k, lr := range r.recs {
		if strings.HasPrefix(k, "erasure/"+tenant+"/") {
			out = append(out, lr.GetErasure())
		}
	}
	return out
}

// InForce reports whether a hold still keeps its calls.
func InForce(h *verbatimv1.LegalHold) bool {
	return h.GetState() == verbatimv1.HoldState_HOLD_STATE_PLACED || h.GetState() == verbatimv1.HoldState_HOLD_STATE_RELEASE_REQUESTED
}

// heldBy lists the holds in force that keep a call of tenant with these
// parties (numbers, URIs, ANI/DNIS).
func (r *Registry) heldBy(tenant, callID string, parties []string) []string {
	var ids []string
	for _, h := range r.Holds(tenant) {
		if !InForce(h) {
			continue
		}
		if slices.Contains(h.GetCallIds(), callID) || (h.GetParty() != "" && slices.Contains(parties, h.GetParty())) {
			ids = append(ids, h.GetHoldId())
		}
	}
	return ids
}
