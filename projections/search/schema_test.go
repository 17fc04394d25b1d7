package search_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// TestClickHouse migrates a fresh database on the local stack's ClickHouse
// (18.16 from Debian), inserts a call twice as a replay would, and checks
// that a tenant-scoped select sees it once.
func TestClickHouse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := search.Config{
		Addr:     stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR"),
		User:     os.Getenv("VERBATIM_CLICKHOUSE_USER"),
		Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD"),
		Database: fmt.Sprintf("verbatim_test_%d", time.Now().UnixNano()),
	}
	conn, db, err := search.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")

	n, err := search.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if n == 0 {
		t.Fatal("no migration applied to a new database")
	}
	if n2, err := search.Migrate(ctx, conn, db); err != nil || n2 != 0 {
		t.Fatalf("second Migrate applied %d (err %v), want 0", n2, err)
	}

	start := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	for range 2 { // the same event replayed
		for _, tenant := range []string{"demo", "acme"} {
			b, err := conn.PrepareBatch(ctx, "INSERT INTO `"+db+"`.calls (tenant, call_id, started_at, ended_at, duration_ms, end_reason, source, version)")
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Append(tenant, "call-1", start, start.Add(8*time.Second), uint64(8480), "bye", "pcap", uint64(1)); err != nil {
				t.Fatal(err)
			}
			if err := b.Send(); err != nil {
				t.Fatalf("insert: %v", err)
			}
		}
	}
	rows, err := conn.Query(ctx, "SELECT call_id, started_at, duration_ms FROM `"+db+"`.calls FINAL WHERE tenant = ?", "demo")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var count int
	for rows.Next() {
		var id string
		var at time.Time
		var ms uint64
		if err := rows.Scan(&id, &at, &ms); err != nil {
			t.Fatal(err)
		}
		if id != "call-1" || !at.Equal(start) || ms != 8480 {
			t.Fatalf("row = %s %v %d", id, at, ms)
		}
		count++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if count != 1 {
		t.Fatalf("tenant demo sees %d rows after a replay, want 1", count)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse %s: %d migrations applied, replayed insert selected once", version, n)
}
