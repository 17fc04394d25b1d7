package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// A Class is a retention class of a tenant: its calls are kept Keep
// after their first recording was stored.
type Class struct {
	// Kind is tag (MetadataAttached tags), group (skill group), party
	// (a number, SIP URI, e-mail address or agent id, matched as
	// FindSubject does) or direction (inbound, outbound, internal).
	Kind  string
	Value string
	Keep  time.Duration
}

// ClassKinds are the kinds of retention class.
var ClassKinds = []string{"tag", "group", "party", "direction"}

func (c Class) String() string { return c.Kind + "=" + c.Value }

// Validate says what is wrong with c.
func (c Class) Validate() error {
	if !slices.Contains(ClassKinds, c.Kind) {
		return fmt.Errorf("lifecycle: retention class %q: the kind is one of %s", c.Kind, strings.Join(ClassKinds, ", "))
	}
	if c.Value == "" || len(c.Value) > 256 {
		return fmt.Errorf("lifecycle: retention class %s: a value of 1 to 256 bytes", c)
	}
	if c.Kind == "direction" && directionName(c.Value) == "" {
		return fmt.Errorf("lifecycle: retention class %s: the direction is inbound, outbound or internal", c)
	}
	if c.Keep <= 0 {
		return fmt.Errorf("lifecycle: retention class %s: keep it for a positive time", c)
	}
	return nil
}

func directionName(v string) string {
	switch strings.ToLower(v) {
	case "inbound", "outbound", "internal":
		return "DIRECTION_" + strings.ToUpper(v)
	}
	return ""
}

// RetentionReport is what a run of ApplyRetention found and did. Matched
// = Extended + Unchanged + NoRecording.
type RetentionReport struct {
	Tenant string `json:"tenant"`
	RunID  string `json:"run_id"`
	DryRun bool   `json:"dry_run"`
	// ByClass: how many calls each class matched (a call may be in
	// several; the longest keep wins).
	ByClass map[string]int `json:"by_class"`
	// Matched: calls in at least one class.
	Matched int `json:"matched"`
	// Extended: calls whose objects' locks were extended (a dry run:
	// would be).
	Extended        int `json:"extended"`
	ObjectsExtended int `json:"objects_extended"`
	// Unchanged: calls every object of which was locked long enough.
	Unchanged int `json:"unchanged"`
	// NoRecording: calls with nothing stored yet (a later run extends
	// them once they are).
	NoRecording int `json:"no_recording"`
}

// ApplyRetention extends the object locks of tenant's calls in classes to
// their first recording's storage time plus the class's keep (the longest
// of the classes a call is in), never shortening one. Each call extended
// is a RetentionExtended event with its audit event, in one transaction,
// after its objects' locks are set; a run that stopped part way is
// finished by running it again. With dryRun it only counts. progress, if
// set, is called after each call.
func (l *Lifecycle) ApplyRetention(ctx context.Context, tenant string, classes []Class, dryRun bool, by Actor, progress func(done, total int)) (RetentionReport, error) {
	rep := RetentionReport{Tenant: tenant, RunID: "retention-" + schemas.RandomID(), DryRun: dryRun, ByClass: map[string]int{}}
	if len(classes) == 0 {
		return rep, errors.New("lifecycle: no retention class given")
	}
	for _, c := range classes {
		if err := c.Validate(); err != nil {
			return rep, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The class each call is kept longest by.
	best := map[string]Class{}
	for _, c := range classes {
		ids, err := l.classCalls(ctx, tenant, c)
		if err != nil {
			return rep, err
		}
		rep.ByClass[c.String()] = len(ids)
		for _, id := range ids {
			if b, ok := best[id]; !ok || c.Keep > b.Keep {
				best[id] = c
			}
		}
	}
	ids := make([]string, 0, len(best))
	for id := range best {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	rep.Matched = len(ids)
	stored, err := l.firstStored(ctx, tenant, ids)
	if err != nil {
		return rep, err
	}
	var done int
	var recorded []string
	for _, id := range ids {
		if _, ok := stored[id]; ok {
			recorded = append(recorded, id)
			continue
		}
		rep.NoRecording++
		done++
	}
	for chunk := range slices.Chunk(recorded, 500) {
		cs, err := l.loadCalls(ctx, tenant, chunk)
		if err != nil {
			return rep, err
		}
		for _, c := range cs {
			class := best[c.id]
			if len(c.objects) == 0 {
				rep.NoRecording++
			} else if n, err := l.extend(ctx, c, class, stored[c.id].Add(class.Keep).Truncate(time.Second), rep.RunID, dryRun, by); err != nil {
				return rep, err
			} else if n > 0 {
				rep.Extended++
				rep.ObjectsExtended += n
			} else {
				rep.Unchanged++
			}
			done++
			if progress != nil {
				progress(done, len(ids))
			}
		}
	}
	if dryRun {
		return rep, nil
	}
	var counts []string
	for _, c := range classes {
		counts = append(counts, fmt.Sprintf("%s for %s: %d", c, c.Keep, rep.ByClass[c.String()]))
	}
	a, err := l.audit(tenant, "retention.apply", by, "retention", rep.RunID, "", fmt.Sprintf("%d calls in classes (%s): %d extended (%d objects), %d locked long enough, %d not stored yet",
		rep.Matched, strings.Join(counts, "; "), rep.Extended, rep.ObjectsExtended, rep.Unchanged, rep.NoRecording), false)
	if err != nil {
		return rep, err
	}
	return rep, l.cfg.Writer.Commit(ctx, a)
}

// extend locks c's objects until at least until and, if any lock was
// shorter, commits a RetentionExtended with its audit event. It returns
// how many objects it extended.
func (l *Lifecycle) extend(ctx context.Context, c *call, class Class, until time.Time, runID string, dryRun bool, by Actor) (int, error) {
	var n int
	for _, k := range c.objects {
		st, err := l.cfg.Store.Stat(ctx, k)
		if errors.Is(err, objstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("lifecycle: call %s: %w", c.id, err)
		}
		if !st.RetainUntil.Before(until) {
			continue
		}
		n++
		if dryRun {
			continue
		}
		if err := l.cfg.Store.ExtendRetention(ctx, k, until); err != nil {
			return n, fmt.Errorf("lifecycle: call %s: %w", c.id, err)
		}
	}
	if n == 0 || dryRun {
		return n, nil
	}
	now := l.cfg.Now()
	ev, err := schemas.NewRecord(schemas.TopicRecordings, []byte(c.id), schemas.Envelope{ID: schemas.DerivedID(runID, c.id, "retention"),
		Tenant: c.tenant, CallID: c.id, OccurredAt: now, Producer: l.cfg.Producer},
		&verbatimv1.RetentionExtended{CallId: c.id, Class: class.String(), RetainUntil: timestamppb.New(until), ObjectKeys: c.objects,
			RunId: runID, ExtendedAt: timestamppb.New(now)})
	if err != nil {
		return n, err
	}
	a, err := l.audit(c.tenant, "call.retention_extend", by, "call", c.id, c.id,
		fmt.Sprintf("retention class %s: %d objects locked until %s by %s", class, n, until.UTC().Format(time.RFC3339), runID), false)
	if err != nil {
		return n, err
	}
	if err := l.cfg.Writer.Commit(ctx, []*kgo.Record{ev, a}...); err != nil {
		return n, fmt.Errorf("lifecycle: call %s: its objects are locked until %s, but: %w", c.id, until.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}

// classCalls lists tenant's calls in class c, erased ones left out.
func (l *Lifecycle) classCalls(ctx context.Context, tenant string, c Class) ([]string, error) {
	if c.Kind == "party" {
		return l.FindSubject(ctx, tenant, c.Value)
	}
	db := "`" + l.cfg.Database + "`"
	var q string
	arg := c.Value
	switch c.Kind {
	case "tag":
		q = "SELECT DISTINCT call_id FROM " + db + ".metadata FINAL WHERE tenant = ? AND has(tags, ?)"
	case "group":
		q = "SELECT DISTINCT call_id FROM " + db + ".metadata FINAL WHERE tenant = ? AND skill_group = ?"
	case "direction":
		q, arg = "SELECT DISTINCT call_id FROM "+db+".calls FINAL WHERE tenant = ? AND direction = ?", directionName(c.Value)
	}
	rows, err := l.cfg.Conn.Query(ctx, q+" AND call_id NOT IN (SELECT call_id FROM "+db+".erased_calls WHERE tenant = ?) ORDER BY call_id", tenant, arg, tenant)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: calls of class %s: %w", c, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// firstStored is when each call's first recording was stored.
func (l *Lifecycle) firstStored(ctx context.Context, tenant string, ids []string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	db := "`" + l.cfg.Database + "`"
	for chunk := range slices.Chunk(ids, 500) {
		args := []any{tenant}
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := l.cfg.Conn.Query(ctx, "SELECT call_id, min(stored_at) FROM "+db+".recordings FINAL WHERE tenant = ? AND call_id IN ("+
			strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+") GROUP BY call_id", args...)
		if err != nil {
			return nil, fmt.Errorf("lifecycle: recordings: %w", err)
		}
		for rows.Next() {
			var id string
			var at time.Time
			if err := rows.Scan(&id, &at); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = at
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
