package audit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/verbatimrec/verbatim/projections/search"
)

// Query selects entries of one tenant's log.
type Query struct {
	// Tenant is required.
	Tenant string
	// CallID, Actor (the actor's subject), Action and Result ("SUCCESS",
	// "DENIED", "ERROR") match exactly when set.
	CallID, Actor, Action, Result string
	// From and To bound the event's time, [From, To).
	From, To time.Time
	// After is the cursor of the previous page (an entry's index).
	After string
	// Descending lists the newest entries first.
	Descending bool
	// Limit is the page size: default 100, at most MaxLimit.
	Limit int
}

// MaxLimit bounds a page of entries.
const MaxLimit = 1000

// Entry is one entry of the log, as queries show it.
type Entry struct {
	Index         int64     `json:"index"`
	EventID       string    `json:"event_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	Action        string    `json:"action"`
	ActorSubject  string    `json:"actor_subject"`
	ActorRole     string    `json:"actor_role"`
	TargetType    string    `json:"target_type,omitempty"`
	TargetID      string    `json:"target_id,omitempty"`
	CallID        string    `json:"call_id,omitempty"`
	Result        string    `json:"result"`
	Reason        string    `json:"reason,omitempty"`
	SourceAddress string    `json:"source_address,omitempty"`
}

// Columns are Entry's fields, as CSV and XLSX exports name them.
var Columns = []string{"index", "event_id", "occurred_at", "action", "actor_subject", "actor_role", "target_type", "target_id", "call_id", //nolint:gochecknoglobals // a constant list
	"result", "reason", "source_address"}

// Row is e's values in the order of Columns.
func (e Entry) Row() []string {
	return []string{strconv.FormatInt(e.Index, 10), e.EventID, e.OccurredAt.UTC().Format(time.RFC3339), e.Action, e.ActorSubject, e.ActorRole,
		e.TargetType, e.TargetID, e.CallID, e.Result, e.Reason, e.SourceAddress}
}

// ValidCursor reports whether c is a cursor Search gives.
func ValidCursor(c string) bool {
	n, err := strconv.ParseUint(c, 10, 63)
	return err == nil && strconv.FormatUint(n, 10) == c
}

// Search returns a page of q's entries in log order (newest first with
// Descending) and the cursor of the next page ("" at the end). Every
// value is a bound parameter.
func Search(ctx context.Context, conn driver.Conn, db string, q Query) ([]Entry, string, error) {
	if q.Tenant == "" {
		return nil, "", fmt.Errorf("audit: a tenant is required")
	}
	if err := search.ValidDatabase(db); err != nil {
		return nil, "", err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.Limit > MaxLimit {
		return nil, "", fmt.Errorf("audit: at most %d entries a page", MaxLimit)
	}
	where, args := []string{"tenant = ?"}, []any{q.Tenant}
	for col, v := range map[string]string{"call_id": q.CallID, "actor_subject": q.Actor, "action": q.Action, "result": q.Result} {
		if v != "" {
			where, args = append(where, col+" = ?"), append(args, v)
		}
	}
	if !q.From.IsZero() {
		where, args = append(where, "occurred_at >= ?"), append(args, q.From.UTC())
	}
	if !q.To.IsZero() {
		where, args = append(where, "occurred_at < ?"), append(args, q.To.UTC())
	}
	order, after := "idx", "idx > ?"
	if q.Descending {
		order, after = "idx DESC", "idx < ?"
	}
	if q.After != "" {
		if !ValidCursor(q.After) {
			return nil, "", fmt.Errorf("audit: bad cursor %q", q.After)
		}
		n, _ := strconv.ParseUint(q.After, 10, 63)
		where, args = append(where, after), append(args, n)
	}
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT idx, event_id, occurred_at, action, actor_subject, actor_role, target_type, target_id, call_id, result, reason, source_address "+
		"FROM `%s`.audit_log WHERE %s ORDER BY %s LIMIT %d", db, strings.Join(where, " AND "), order, q.Limit+1), args...)
	if err != nil {
		return nil, "", fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var idx uint64
		if err := rows.Scan(&idx, &e.EventID, &e.OccurredAt, &e.Action, &e.ActorSubject, &e.ActorRole, &e.TargetType, &e.TargetID, &e.CallID,
			&e.Result, &e.Reason, &e.SourceAddress); err != nil {
			return nil, "", err
		}
		e.Index = int64(idx)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > q.Limit {
		out = out[:q.Limit]
		next = strconv.FormatInt(out[len(out)-1].Index, 10)
	}
	return out, next, nil
}

// Latest is tenant's latest signed checkpoint (its note) and its size.
func Latest(ctx context.Context, conn driver.Conn, db, tenant string) (string, int64, error) {
	signed, size, err := signedAt(ctx, conn, db, tenant, 0, false)
	if err != nil {
		return "", 0, fmt.Errorf("audit: tenant %s has no signed checkpoint yet", tenant)
	}
	return signed, size, nil
}

// Tenants lists the tenants that have a log.
func Tenants(ctx context.Context, conn driver.Conn, db string) ([]string, error) {
	if err := search.ValidDatabase(db); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT tenant FROM `"+db+"`.audit_log ORDER BY tenant")
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
