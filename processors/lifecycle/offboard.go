package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// OffboardRequest asks for a tenant's data to be disposed of at the end
// of its contract.
type OffboardRequest struct {
	Tenant string
	// Confirm must repeat Tenant: nothing is undone afterwards.
	Confirm string
	// RetentionWaived, when objects are still locked, says why their
	// retention no longer binds (the contract's end, the export the
	// customer took). Without it a locked object refuses the offboarding.
	RetentionWaived string
	DryRun          bool
	By              Actor
	// Keys destroys the tenant's KEK and proves its data keys no longer
	// unwrap.
	Keys interface {
		keys.Manager
		keys.Destroyer
	}
	// Progress, if set, is told each step as it starts.
	Progress func(step string)
}

// OffboardReport is what an offboarding found and did, and the proof
// that nothing of the tenant can be read any more.
type OffboardReport struct {
	Tenant string    `json:"tenant"`
	RunID  string    `json:"run_id"`
	DryRun bool      `json:"dry_run"`
	At     time.Time `json:"at"`
	// Found before: data keys in the registry, calls in search, rows per
	// table, objects in the store (of them, locked until LockedUntil).
	DataKeys    int               `json:"data_keys"`
	Calls       int               `json:"calls"`
	Rows        map[string]uint64 `json:"rows"`
	Objects     int               `json:"objects"`
	Locked      int               `json:"objects_locked"`
	LockedUntil time.Time         `json:"locked_until,omitzero"`
	// Done: the KEK destroyed, the data keys shredded (tombstones on the
	// keys topic), the rows deleted, the objects deleted; those object
	// lock keeps (ObjectsKept) stay as ciphertext whose keys are gone.
	// Objects = ObjectsDeleted + ObjectsKept.
	KEKDestroyed   bool     `json:"kek_destroyed"`
	KeysShredded   int      `json:"keys_shredded"`
	CallsErased    int      `json:"calls_erased"`
	ObjectsDeleted int      `json:"objects_deleted"`
	ObjectsKept    []string `json:"objects_kept,omitempty"`
	// Proof, checked after the steps: sampled data keys no longer unwrap,
	// no live data key is left, no row is left, search finds no call, and
	// the store lists only the objects kept.
	Proof []string `json:"proof"`
}

// offboardSample is how many of the tenant's data keys the proof tries
// to unwrap after the KEK is gone.
const offboardSample = 5

// Offboard disposes of a tenant's data: refused while a legal hold is in
// force or (without RetentionWaived) while an object is locked. It
// destroys the tenant's KEK first, which makes all its data unreadable
// at once, then shreds every data key, deletes the rows and the objects,
// and proves the result. Each step is audited; run again, it finishes
// what an interrupted run left.
func (l *Lifecycle) Offboard(ctx context.Context, req OffboardRequest) (OffboardReport, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now()
	rep := OffboardReport{Tenant: req.Tenant, RunID: "offboard-" + schemas.RandomID(), DryRun: req.DryRun, At: now.UTC()}
	step := func(s string) {
		if req.Progress != nil {
			req.Progress(s)
		}
	}
	if err := keys.ValidateTenant(req.Tenant); err != nil {
		return rep, err
	}
	if req.Confirm != req.Tenant {
		return rep, fmt.Errorf("%w: offboarding destroys tenant %s's data for good: confirm with its name", ErrRefused, req.Tenant)
	}
	if req.Keys == nil {
		return rep, errors.New("lifecycle: offboard: a key manager that destroys keys is required")
	}
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return rep, err
	}
	var holds []string
	for _, h := range l.cfg.Registry.Holds(req.Tenant) {
		if InForce(h) {
			holds = append(holds, h.GetHoldId()+" ("+h.GetLabel()+")")
		}
	}
	if len(holds) > 0 {
		return rep, l.refuseOffboard(ctx, req, fmt.Sprintf("legal holds in force: %s: release them first", strings.Join(holds, ", ")))
	}

	step("inventory")
	reg, err := keyops.Read(ctx, l.cfg.Kafka, req.Tenant)
	if err != nil {
		return rep, err
	}
	rep.DataKeys = len(reg.Keys)
	if rep.Rows, err = search.TenantRows(ctx, l.cfg.Conn, l.cfg.Database, req.Tenant); err != nil {
		return rep, err
	}
	ids, err := search.TenantCalls(ctx, l.cfg.Conn, l.cfg.Database, req.Tenant)
	if err != nil {
		return rep, err
	}
	rep.Calls = len(ids)
	objects, err := l.cfg.Store.List(ctx, req.Tenant+"/")
	if err != nil {
		return rep, err
	}
	rep.Objects = len(objects)
	var held []string
	for _, k := range objects {
		info, err := l.cfg.Store.Stat(ctx, k)
		if errors.Is(err, objstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		if info.LegalHold {
			held = append(held, k)
		}
		if info.RetainUntil.After(now) {
			rep.Locked++
			rep.LockedUntil = later(rep.LockedUntil, info.RetainUntil)
		}
	}
	if len(held) > 0 {
		return rep, l.refuseOffboard(ctx, req, fmt.Sprintf("%d objects have their S3 legal hold set (e.g. %s): release the holds first", len(held), held[0]))
	}
	if rep.Locked > 0 && strings.TrimSpace(req.RetentionWaived) == "" {
		return rep, l.refuseOffboard(ctx, req, fmt.Sprintf("%d of %d objects are under retention, the latest until %s: the obligation is the tenant's; "+
			"say why it no longer binds (--retention-waived: the contract's end, the export the customer took) to destroy them unreadable before their lock ends",
			rep.Locked, rep.Objects, rep.LockedUntil.UTC().Format(time.RFC3339)))
	}
	if req.DryRun {
		return rep, nil
	}
	why := "tenant offboarded (" + rep.RunID + ")"
	if req.RetentionWaived != "" {
		why += "; retention waived: " + req.RetentionWaived
	}
	commitAudit := func(action, reason string) error {
		rec, err := l.audit(req.Tenant, action, req.By, "tenant", req.Tenant, "", reason, false)
		if err != nil {
			return err
		}
		return l.cfg.Writer.Commit(ctx, rec)
	}

	step("destroying the key-encryption key")
	sample := reg.Keys[:min(offboardSample, len(reg.Keys))]
	if err := req.Keys.DestroyKEK(ctx, req.Tenant); err != nil {
		return rep, fmt.Errorf("lifecycle: offboard %s: destroying its KEK: %w", req.Tenant, err)
	}
	rep.KEKDestroyed = true
	if err := commitAudit("tenant.kek_destroy", why+": every version of the tenant's key-encryption key destroyed; its data is unreadable"); err != nil {
		return rep, err
	}

	step("shredding data keys")
	// Each call's keys are shredded with its CallErased, so that a
	// projection rebuilt from the topics drops the call too.
	byCall := map[string][]string{}
	var loose []string
	for _, k := range reg.Keys {
		if c := k.GetCallId(); c != "" {
			byCall[c] = append(byCall[c], k.GetKeyId())
		} else {
			loose = append(loose, k.GetKeyId())
		}
	}
	for _, id := range ids {
		if _, ok := byCall[id]; !ok {
			byCall[id] = nil
		}
	}
	calls := slices.Sorted(maps.Keys(byCall))
	const callsPerTxn = 200
	for i := 0; i < len(calls) || (i == 0 && len(loose) > 0); i += callsPerTxn {
		var recs []*kgo.Record
		batch := calls[i:min(i+callsPerTxn, len(calls))]
		shredded := 0
		for _, c := range batch {
			ks := byCall[c]
			slices.Sort(ks)
			for _, k := range ks {
				recs = append(recs, &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(k)}) // a tombstone
			}
			shredded += len(ks)
			ev, err := schemas.NewRecord(schemas.TopicRecordings, []byte(c), schemas.Envelope{ID: schemas.DerivedID(rep.RunID, c, "erased"),
				Tenant: req.Tenant, CallID: c, OccurredAt: now, Producer: l.cfg.Producer},
				&verbatimv1.CallErased{CallId: c, Reason: verbatimv1.DeletionReason_DELETION_REASON_TENANT_OFFBOARDED, RequestId: rep.RunID,
					ErasedAt: timestamppb.New(now), ShreddedKeyIds: ks})
			if err != nil {
				return rep, err
			}
			recs = append(recs, ev)
		}
		if i+callsPerTxn >= len(calls) {
			for _, k := range loose {
				recs = append(recs, &kgo.Record{Topic: schemas.TopicKeys, Key: []byte(k)})
			}
			shredded += len(loose)
		}
		if err := l.cfg.Writer.Commit(ctx, recs...); err != nil {
			return rep, fmt.Errorf("lifecycle: offboard %s: shredding data keys: %w", req.Tenant, err)
		}
		rep.KeysShredded += shredded
	}
	if err := commitAudit("tenant.keys_shred", fmt.Sprintf("%s: %d data keys of %d calls shredded", why, rep.KeysShredded, len(calls))); err != nil {
		return rep, err
	}

	step("deleting rows")
	if rep.CallsErased, err = search.EraseTenant(ctx, l.cfg.Conn, l.cfg.Database, req.Tenant, rep.RunID, "tenant offboarded", now); err != nil {
		return rep, err
	}
	if err := search.WaitMutations(ctx, l.cfg.Conn, l.cfg.Database); err != nil {
		return rep, err
	}
	if err := commitAudit("tenant.rows_delete", fmt.Sprintf("%s: the rows of %d calls deleted", why, rep.CallsErased)); err != nil {
		return rep, err
	}

	step("deleting objects")
	for _, k := range objects {
		switch err := l.cfg.Store.Delete(ctx, k); {
		case err == nil, errors.Is(err, objstore.ErrNotFound):
			rep.ObjectsDeleted++
		case errors.Is(err, objstore.ErrRetained) || errors.Is(err, objstore.ErrHeld):
			rep.ObjectsKept = append(rep.ObjectsKept, k)
		default:
			return rep, fmt.Errorf("lifecycle: offboard %s: its KEK is destroyed and its rows deleted, but: %w", req.Tenant, err)
		}
	}
	if err := commitAudit("tenant.objects_delete", fmt.Sprintf("%s: %d objects deleted, %d kept by their lock as ciphertext without keys", why,
		rep.ObjectsDeleted, len(rep.ObjectsKept))); err != nil {
		return rep, err
	}

	step("proving")
	if err := l.proveOffboard(ctx, req, sample, &rep); err != nil {
		return rep, err
	}
	return rep, commitAudit("tenant.offboard", fmt.Sprintf("%s: %d data keys, %d calls, %d objects disposed of; proof: %s", why, rep.KeysShredded,
		rep.CallsErased, rep.Objects, strings.Join(rep.Proof, "; ")))
}

// proveOffboard checks what an offboarding promises and says so in the
// report; any check that fails is an error.
func (l *Lifecycle) proveOffboard(ctx context.Context, req OffboardRequest, sample []*verbatimv1.DataKey, rep *OffboardReport) error {
	for _, k := range sample {
		w := keys.Wrapped{KEKName: k.GetKekName(), KEKVersion: k.GetKekVersion(), Ciphertext: k.GetWrappedDek()}
		if _, err := req.Keys.UnwrapDataKey(ctx, req.Tenant, w); err == nil {
			return fmt.Errorf("lifecycle: offboard %s: data key %s still unwraps after its KEK was destroyed", req.Tenant, k.GetKeyId())
		}
	}
	rep.Proof = append(rep.Proof, fmt.Sprintf("%d of %d sampled data keys no longer unwrap", len(sample), len(sample)))
	reg, err := keyops.Read(ctx, l.cfg.Kafka, req.Tenant)
	if err != nil {
		return err
	}
	if len(reg.Keys) > 0 {
		return fmt.Errorf("lifecycle: offboard %s: %d data keys are still live in the registry", req.Tenant, len(reg.Keys))
	}
	rep.Proof = append(rep.Proof, "no data key of the tenant is live in the registry")
	rows, err := search.TenantRows(ctx, l.cfg.Conn, l.cfg.Database, req.Tenant)
	if err != nil {
		return err
	}
	for t, n := range rows {
		if n > 0 {
			return fmt.Errorf("lifecycle: offboard %s: %d rows left in %s", req.Tenant, n, t)
		}
	}
	rep.Proof = append(rep.Proof, fmt.Sprintf("no row left in %s", strings.Join(search.ErasedTables, ", ")))
	rs, _, err := search.SearchPage(ctx, l.cfg.Conn, l.cfg.Database, search.Query{Tenant: req.Tenant, Limit: 1})
	if err != nil {
		return err
	}
	if len(rs) > 0 {
		return fmt.Errorf("lifecycle: offboard %s: search still finds call %s", req.Tenant, rs[0].CallID)
	}
	rep.Proof = append(rep.Proof, "search finds no call")
	left, err := l.cfg.Store.List(ctx, req.Tenant+"/")
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, k := range rep.ObjectsKept {
		kept[k] = true
	}
	for _, k := range left {
		if !kept[k] {
			return fmt.Errorf("lifecycle: offboard %s: object %s is still stored", req.Tenant, k)
		}
	}
	rep.Proof = append(rep.Proof, fmt.Sprintf("the store lists %d objects, each kept by its lock, sealed under keys that are gone", len(left)))
	return nil
}

// refuseOffboard audits a refusal and returns it.
func (l *Lifecycle) refuseOffboard(ctx context.Context, req OffboardRequest, why string) error {
	rec, err := l.audit(req.Tenant, "tenant.offboard", req.By, "tenant", req.Tenant, "", why, true)
	if err == nil {
		err = l.cfg.Writer.Commit(ctx, rec)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("%w: %s", ErrRefused, why), err)
	}
	return fmt.Errorf("%w: offboarding tenant %s: %s", ErrRefused, req.Tenant, why)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
