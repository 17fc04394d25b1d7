package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/projections/search"
)

// recordingConn notes every query sent through it, with its arguments.
type recordingConn struct {
	driver.Conn
	mu      sync.Mutex
	queries []string
}

func (c *recordingConn) note(q string, args []any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queries = append(c.queries, literal(q, args))
}

func (c *recordingConn) Query(ctx context.Context, q string, args ...any) (driver.Rows, error) {
	c.note(q, args)
	return c.Conn.Query(ctx, q, args...)
}

func (c *recordingConn) QueryRow(ctx context.Context, q string, args ...any) driver.Row {
	c.note(q, args)
	return c.Conn.QueryRow(ctx, q, args...)
}

// literal binds args into q's ? placeholders as ClickHouse literals.
func literal(q string, args []any) string {
	var b strings.Builder
	for _, part := range strings.Split(q, "?") {
		b.WriteString(part)
		if len(args) == 0 {
			continue
		}
		switch v := args[0].(type) {
		case string:
			b.WriteString("'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'")
		case time.Time:
			fmt.Fprintf(&b, "toDateTime64('%s', 9, 'UTC')", v.UTC().Format("2006-01-02 15:04:05.999999999"))
		case bool:
			fmt.Fprint(&b, map[bool]int{false: 0, true: 1}[v])
		default:
			fmt.Fprint(&b, v)
		}
		args = args[1:]
	}
	return b.String()
}

// chdbScript applies a list of statements, in order, in chdb's engine;
// it stops at the first that fails and says which.
const chdbScript = `
import json, sys
import chdb
import chdb.session as cs
req = json.load(sys.stdin)
s = cs.Session()
done = 0
for i, q in enumerate(req["statements"]):
    try:
        s.query(q, "CSV")
    except Exception as e:
        print(json.dumps({"done": done, "failed": i, "error": str(e)[:2000]}))
        sys.exit(0)
    done += 1
print(json.dumps({"done": done, "version": s.query("SELECT version()", "CSV").bytes().decode().strip()}))
`

// TestSchemaOnCurrentClickHouse: the schema and the queries search sends
// work on a current ClickHouse as on Debian's 18.16 (the one the other
// tests use): every migration applies in chdb-core's engine (ClickHouse
// 26.9, in-process), and each query search sent to 18.16 for a page of calls, a call's detail, the
// erasure and offboarding lookups runs there too.
func TestSchemaOnCurrentClickHouse(t *testing.T) {
	py := os.Getenv("VERBATIM_CHDB_PYTHON")
	if py == "" {
		if os.Getenv("VERBATIM_INTEGRATION") != "" {
			t.Fatal("VERBATIM_CHDB_PYTHON is not set: make test installs chdb-core into a virtualenv and sets it")
		}
		t.Skip("VERBATIM_CHDB_PYTHON not set (a python with chdb-core; make test sets it)")
	}
	conn, db := openDB(t)
	ctx := context.Background()
	km, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	var recs = callRecords(t, km, "demo", "c1", "sip-c1", "1001", "2002", t0, time.Minute)
	recs = append(recs, callRecords(t, km, "demo", "c2", "sip-c2", "1001", "3003", t0.Add(time.Hour), time.Minute)...)
	if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rc := &recordingConn{Conn: conn}
	for _, q := range []search.Query{
		{Tenant: "demo", Limit: 10},
		{Tenant: "demo", Party: "1001", Descending: true, Limit: 1},
		{Tenant: "demo", CallID: "c1", History: true},
		{Tenant: "demo", From: t0, To: t0.Add(2 * time.Hour), Status: "complete", Direction: "inbound", Tag: "mifid", Agent: "a1", SkillGroup: "loans"},
		{Tenant: "demo", Parties: []string{"1001"}, SkillGroups: []string{"loans"}},
	} {
		if _, _, err := search.SearchPage(ctx, rc, db, q); err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
	}
	if _, err := search.TenantCalls(ctx, rc, db, "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := search.TenantRows(ctx, rc, db, "demo"); err != nil {
		t.Fatal(err)
	}
	const current = "verbatim_current"
	stmts := append([]string{"CREATE DATABASE IF NOT EXISTS `" + current + "`"}, search.MigrationStatements(current)...)
	migrations := len(stmts)
	for _, q := range rc.queries {
		stmts = append(stmts, strings.ReplaceAll(q, "`"+db+"`", "`"+current+"`"))
	}
	in, _ := json.Marshal(map[string]any{"statements": stmts})
	script := filepath.Join(t.TempDir(), "apply.py")
	if err := os.WriteFile(script, []byte(chdbScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, py, script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chdb: %v: %s", err, out)
	}
	var res struct {
		Done, Failed int
		Error        string
		Version      string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("chdb said %q: %v", out, err)
	}
	if res.Error != "" {
		t.Fatalf("on ClickHouse of chdb-core, statement %d of %d fails: %s\n%s", res.Failed+1, len(stmts), res.Error, stmts[res.Failed])
	}
	t.Logf("ClickHouse %s (chdb-core): %d migrations applied, %d queries of search run", res.Version, migrations-1, len(rc.queries))
}
