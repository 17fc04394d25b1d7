package search

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Query selects calls of one tenant. Empty fields do not filter.
type Query struct {
	// Tenant is required: every search is scoped to one tenant.
	Tenant string
	// From and To bound the call's start time, [From, To).
	From, To time.Time
	// Party matches any participant's phone number or SIP URI exactly.
	Party string
	// CallID matches Verbatim's call id or the SIP Call-ID.
	CallID string
	// Limit, default 100.
	Limit int
}

// Party is one participant of a found call.
type Party struct {
	ID, Role, URI, Number, DisplayName string
}

// Result is one found call.
type Result struct {
	CallID, SIPCallID  string
	StartedAt, EndedAt time.Time
	Duration           time.Duration
	EndReason          string
	Parties            []Party
}

// Search runs q against the projection in database db.
func Search(ctx context.Context, conn driver.Conn, db string, q Query) ([]Result, error) {
	if q.Tenant == "" {
		return nil, errors.New("search: a tenant is required")
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	where := []string{"tenant = ?"}
	args := []any{q.Tenant}
	if !q.From.IsZero() {
		where, args = append(where, "started_at >= ?"), append(args, q.From.UTC())
	}
	if !q.To.IsZero() {
		where, args = append(where, "started_at < ?"), append(args, q.To.UTC())
	}
	if q.CallID != "" {
		where, args = append(where, "(call_id = ? OR sip_call_id = ?)"), append(args, q.CallID, q.CallID)
	}
	if q.Party != "" {
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.participants FINAL WHERE tenant = ? AND (number = ? OR uri = ?))")
		args = append(args, q.Tenant, q.Party, q.Party)
	}
	sql := fmt.Sprintf("SELECT call_id, sip_call_id, started_at, ended_at, duration_ms, end_reason FROM `%s`.calls FINAL WHERE %s ORDER BY started_at, call_id LIMIT %d",
		db, strings.Join(where, " AND "), q.Limit)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var out []Result
	for rows.Next() {
		var r Result
		var ms uint64
		if err := rows.Scan(&r.CallID, &r.SIPCallID, &r.StartedAt, &r.EndedAt, &ms, &r.EndReason); err != nil {
			rows.Close()
			return nil, fmt.Errorf("search: %w", err)
		}
		r.Duration = time.Duration(ms) * time.Millisecond
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	for i := range out {
		prow, err := conn.Query(ctx, "SELECT participant_id, role, uri, number, display_name FROM `"+db+"`.participants FINAL WHERE tenant = ? AND call_id = ? ORDER BY participant_id",
			q.Tenant, out[i].CallID)
		if err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		for prow.Next() {
			var p Party
			if err := prow.Scan(&p.ID, &p.Role, &p.URI, &p.Number, &p.DisplayName); err != nil {
				prow.Close()
				return nil, fmt.Errorf("search: %w", err)
			}
			out[i].Parties = append(out[i].Parties, p)
		}
		prow.Close()
	}
	return out, nil
}
