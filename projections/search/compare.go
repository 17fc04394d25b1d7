package search

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DayCount is what a projection holds of one tenant's day (UTC, by call
// start): calls, the participants of those calls, recordings (newest per
// call) and metadata events.
type DayCount struct {
	Tenant                                    string
	Day                                       time.Time
	Calls, Participants, Recordings, Metadata uint64
}

// Difference is a tenant's day the two projections do not agree on.
type Difference struct {
	Tenant string
	Day    time.Time
	A, B   DayCount // zero where a projection has nothing of that day
}

// String says what differs: "demo 2016-11-26: calls 2 / 1".
func (d Difference) String() string {
	var what []string
	for _, f := range []struct {
		name string
		a, b uint64
	}{{"calls", d.A.Calls, d.B.Calls}, {"participants", d.A.Participants, d.B.Participants},
		{"recordings", d.A.Recordings, d.B.Recordings}, {"metadata", d.A.Metadata, d.B.Metadata}} {
		if f.a != f.b {
			what = append(what, fmt.Sprintf("%s %d / %d", f.name, f.a, f.b))
		}
	}
	return fmt.Sprintf("%s %s: %s", d.Tenant, d.Day.Format(time.DateOnly), strings.Join(what, ", "))
}

// Counts returns what database db holds, per tenant and day.
func Counts(ctx context.Context, conn driver.Conn, db string) ([]DayCount, error) {
	if err := ValidDatabase(db); err != nil {
		return nil, err
	}
	q := func(sql string) string { return strings.ReplaceAll(sql, "{db}", "`"+db+"`") }
	byKey := map[string]*DayCount{}
	get := func(tenant string, day time.Time) *DayCount {
		k := tenant + "\x00" + day.Format(time.DateOnly)
		if c, ok := byKey[k]; ok {
			return c
		}
		c := &DayCount{Tenant: tenant, Day: day}
		byKey[k] = c
		return c
	}
	for _, m := range []struct {
		sql string
		set func(*DayCount, uint64)
	}{
		{"SELECT tenant, toDate(started_at) AS d, count() FROM {db}.calls FINAL GROUP BY tenant, d", func(c *DayCount, n uint64) { c.Calls = n }},
		{"SELECT tenant, toDate(started_at) AS d, count() FROM {db}.participants FINAL GROUP BY tenant, d", func(c *DayCount, n uint64) { c.Participants = n }},
		// A recording counts on its call's day; a call's recordings (a
		// reprocessed one too) count once.
		{"SELECT c.tenant, toDate(c.started_at) AS d, count() FROM (SELECT DISTINCT tenant, call_id FROM {db}.recordings FINAL) AS r " +
			"ANY INNER JOIN (SELECT tenant, call_id, started_at FROM {db}.calls FINAL) AS c USING (tenant, call_id) GROUP BY c.tenant, d",
			func(c *DayCount, n uint64) { c.Recordings = n }},
		{"SELECT tenant, toDate(occurred_at) AS d, count() FROM {db}.metadata FINAL GROUP BY tenant, d", func(c *DayCount, n uint64) { c.Metadata = n }},
	} {
		rows, err := conn.Query(ctx, q(m.sql))
		if err != nil {
			return nil, fmt.Errorf("search: counts of %s: %w", db, err)
		}
		for rows.Next() {
			var tenant string
			var day time.Time
			var n uint64
			if err := rows.Scan(&tenant, &day, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("search: counts of %s: %w", db, err)
			}
			m.set(get(tenant, day.UTC()), n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("search: counts of %s: %w", db, err)
		}
	}
	out := make([]DayCount, 0, len(byKey))
	for _, c := range byKey {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b DayCount) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return a.Day.Compare(b.Day)
	})
	return out, nil
}

// Compare returns the tenants' days on which databases a and b hold
// different numbers of calls, participants, recordings or metadata: none
// when a rebuilt projection matches the one it replaces.
func Compare(ctx context.Context, conn driver.Conn, a, b string) (days int, diffs []Difference, err error) {
	ca, err := Counts(ctx, conn, a)
	if err != nil {
		return 0, nil, err
	}
	cb, err := Counts(ctx, conn, b)
	if err != nil {
		return 0, nil, err
	}
	key := func(c DayCount) string { return c.Tenant + "\x00" + c.Day.Format(time.DateOnly) }
	all := map[string]*Difference{}
	var keys []string
	for i, side := range [][]DayCount{ca, cb} {
		for _, c := range side {
			k := key(c)
			d, ok := all[k]
			if !ok {
				d = &Difference{Tenant: c.Tenant, Day: c.Day}
				all[k] = d
				keys = append(keys, k)
			}
			if i == 0 {
				d.A = c
			} else {
				d.B = c
			}
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		d := all[k]
		if d.A.Calls != d.B.Calls || d.A.Participants != d.B.Participants || d.A.Recordings != d.B.Recordings || d.A.Metadata != d.B.Metadata {
			diffs = append(diffs, *d)
		}
	}
	return len(keys), diffs, nil
}
