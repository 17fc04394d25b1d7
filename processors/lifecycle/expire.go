package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// ExpiryReport is what an expiry run found and did. Due = Held + Erased +
// NotYet when the run is not a dry run; a dry run erases nothing and says
// what a run would.
type ExpiryReport struct {
	Tenant string `json:"tenant"`
	RunID  string `json:"run_id"`
	DryRun bool   `json:"dry_run"`
	// Due: calls whose recordings' retention has ended, by the search
	// rows (a retention class's extension included).
	Due int `json:"due"`
	// Held: kept by a legal hold.
	Held int `json:"held"`
	// NotYet: object storage locks them longer than the rows say (a
	// reprocessed recording kept a longer lock).
	NotYet int `json:"not_yet"`
	// Erased: keys shredded, rows and objects deleted (a dry run: would be).
	Erased         int `json:"erased"`
	ObjectsDeleted int `json:"objects_deleted"`
	// LeftoversDeleted: objects of calls erased or deleted early while
	// locked, deleted now that their lock has ended.
	LeftoversDeleted int                       `json:"leftovers_deleted"`
	Outcomes         []*verbatimv1.CallOutcome `json:"-"`
}

// Expire deletes tenant's calls whose retention has ended and that no
// legal hold keeps: their data keys shredded, rows deleted, every object
// version deleted. With dryRun it only counts. progress, if set, is
// called after each call.
func (l *Lifecycle) Expire(ctx context.Context, tenant string, dryRun bool, by Actor, progress func(done, total int)) (ExpiryReport, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rep := ExpiryReport{Tenant: tenant, RunID: "expiry-" + schemas.RandomID(), DryRun: dryRun}
	if err := l.cfg.Registry.Sync(ctx); err != nil {
		return rep, err
	}
	db := "`" + l.cfg.Database + "`"
	rows, err := l.cfg.Conn.Query(ctx, "SELECT call_id FROM "+db+".recordings FINAL WHERE tenant = ? AND call_id NOT IN (SELECT call_id FROM "+db+
		".erased_calls WHERE tenant = ?) AND call_id NOT IN (SELECT call_id FROM "+db+".retention_extensions FINAL WHERE tenant = ? AND retain_until > ?) "+
		"GROUP BY call_id HAVING min(retain_until) > toDateTime(0) AND max(retain_until) <= ? ORDER BY call_id",
		tenant, tenant, tenant, l.cfg.Now().UTC(), l.cfg.Now().UTC())
	if err != nil {
		return rep, fmt.Errorf("lifecycle: expiry: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return rep, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	rep.Due = len(ids)
	var keyIDs map[string][]string
	if !dryRun && len(ids) > 0 {
		if keyIDs, err = l.keysOf(ctx, tenant); err != nil {
			return rep, err
		}
	}
	for i, id := range ids {
		cs, err := l.loadCalls(ctx, tenant, []string{id})
		if err != nil {
			return rep, err
		}
		c := cs[0]
		o := l.decide(c)
		switch o.GetKind() {
		case verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_HOLD:
			rep.Held++
		case verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_RETENTION:
			rep.NotYet++
		default:
			rep.Erased++
			if dryRun {
				rep.ObjectsDeleted += len(c.objects)
				break
			}
			if err := l.erase(ctx, c, keyIDs[c.id], verbatimv1.DeletionReason_DELETION_REASON_RETENTION_EXPIRED, rep.RunID, by, o); err != nil {
				return rep, err
			}
			rep.ObjectsDeleted += len(o.GetDeletedObjects())
		}
		rep.Outcomes = append(rep.Outcomes, o)
		if progress != nil {
			progress(i+1, len(ids))
		}
	}
	// What erasures and early deletions left locked.
	var left []string
	for _, d := range l.cfg.Registry.Deletions(tenant) {
		for _, o := range d.GetOutcomes() {
			left = append(left, o.GetLockedObjects()...)
		}
	}
	for _, e := range l.cfg.Registry.erasures(tenant) {
		for _, o := range e.GetOutcomes() {
			left = append(left, o.GetLockedObjects()...)
		}
	}
	for _, k := range left {
		st, err := l.cfg.Store.Stat(ctx, k)
		if errors.Is(err, objstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return rep, err
		}
		if st.RetainUntil.After(l.cfg.Now()) || st.LegalHold {
			continue
		}
		rep.LeftoversDeleted++
		if !dryRun {
			if err := l.cfg.Store.Delete(ctx, k); err != nil && !errors.Is(err, objstore.ErrNotFound) {
				return rep, err
			}
		}
	}
	if dryRun {
		return rep, nil
	}
	a, err := l.audit(tenant, "retention.expire", by, "expiry", rep.RunID, "", fmt.Sprintf("%d calls due: %d erased (%d objects), %d held, %d locked longer; %d leftover objects deleted",
		rep.Due, rep.Erased, rep.ObjectsDeleted, rep.Held, rep.NotYet, rep.LeftoversDeleted), false)
	if err != nil {
		return rep, err
	}
	if err := l.cfg.Writer.Commit(ctx, a); err != nil {
		return rep, err
	}
	return rep, search.WaitMutations(ctx, l.cfg.Conn, l.cfg.Database)
}
