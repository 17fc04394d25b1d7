package search_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// countingConn counts the queries a search sends.
type countingConn struct {
	driver.Conn
	n atomic.Int32
}

func (c *countingConn) Query(ctx context.Context, q string, args ...any) (driver.Rows, error) {
	c.n.Add(1)
	return c.Conn.Query(ctx, q, args...)
}

func TestDatabaseNamesAreIdentifiers(t *testing.T) {
	for _, bad := range []string{"", "x`.calls UNION ALL SELECT 1 --", "a b", "1abc", "a-b", strings.Repeat("a", 65), "db;DROP"} {
		if search.ValidDatabase(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
		// Refused before any query is sent.
		c := &countingConn{}
		if _, err := search.Search(context.Background(), c, bad, search.Query{Tenant: "demo"}); err == nil || c.n.Load() != 0 {
			t.Errorf("search in %q: %v after %d queries", bad, err, c.n.Load())
		}
	}
	for _, good := range []string{"verbatim", "verbatim_test_1", "_x", "V2"} {
		if err := search.ValidDatabase(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	if _, err := search.Search(context.Background(), &countingConn{}, "verbatim", search.Query{Tenant: "demo", Limit: search.MaxLimit + 1}); err == nil {
		t.Error("a page larger than MaxLimit was accepted")
	}
}

// TestSearchPagesInBatches: 25 calls of a tenant (several in one second),
// some with two recordings, read in pages of 10 by cursor: each page is one
// query for the calls and one per table, every call comes once, in order,
// with its parties and its current recording, and none of the other
// tenant's.
func TestSearchPagesInBatches(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := range 25 {
		id := fmt.Sprintf("c%02d", i)
		at := t0.Add(time.Duration(i/3) * time.Second) // three calls a second
		recs = append(recs, callRecords(t, km, "demo", id, "sip-"+id, "1001", "2002", at, time.Second)...)
		for gen := range 1 + i%2 { // odd calls reprocessed once
			ev := &verbatimv1.RecordingStored{CallId: id, RecordingId: fmt.Sprintf("r-%s-%d", id, gen), StoredAt: timestamppb.New(at.Add(time.Duration(gen) * time.Minute)),
				Ledgers: []*verbatimv1.StreamLedger{{StreamId: "caller-audio", Captured: 10, Recorded: 10}}}
			if gen == 1 {
				ev.Supersedes = &verbatimv1.Supersession{RecordingId: fmt.Sprintf("r-%s-0", id), Generation: 1}
			}
			r, err := schemas.NewRecord(schemas.TopicRecordings, []byte(id),
				schemas.Envelope{ID: fmt.Sprintf("rec-%s-%d", id, gen), Tenant: "demo", CallID: id, OccurredAt: at}, ev)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
	}
	recs = append(recs, callRecords(t, km, "acme", "x1", "sip-x1", "1001", "2002", t0, time.Second)...)
	if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	c := &countingConn{Conn: conn}
	var got []string
	pages, after := 0, ""
	for {
		before := c.n.Load()
		rs, next, err := search.SearchPage(ctx, c, db, search.Query{Tenant: "demo", Limit: 10, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		// calls, participants, recordings, metadata, retention
		// extensions, session keys (none here, so no second session-key
		// query): a fixed number per page, never one per call
		if q := c.n.Load() - before; q != 6 {
			t.Errorf("page %d: %d queries, want 6", pages, q)
		}
		for _, r := range rs {
			got = append(got, r.CallID)
			n := 0
			fmt.Sscanf(r.CallID, "c%d", &n)
			wantRec := fmt.Sprintf("r-%s-%d", r.CallID, n%2)
			if len(r.Parties) != 2 || r.Recording == nil || r.Recording.RecordingID != wantRec || r.Status != search.StatusRecorded {
				t.Fatalf("%s: parties %v, recording %+v, status %s; want recording %s", r.CallID, r.Parties, r.Recording, r.Status, wantRec)
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	if pages != 3 || len(got) != 25 {
		t.Fatalf("%d pages, %d calls: %v", pages, len(got), got)
	}
	for i, id := range got {
		if id != fmt.Sprintf("c%02d", i) {
			t.Fatalf("call %d is %s: %v", i, id, got)
		}
	}
	if _, _, err := search.SearchPage(ctx, conn, db, search.Query{Tenant: "demo", After: "not-a-cursor"}); err == nil {
		t.Fatal("a bad cursor was accepted")
	}
}

// TestSearchByStatusAndNewestFirst: the status filter takes each call's
// current recording (a partial one reprocessed into a complete one is
// complete), failed calls are "failed"; newest first pages by cursor.
func TestSearchByStatusAndNewestFirst(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	partial := []*verbatimv1.StreamLedger{{StreamId: "s", Captured: 10, Recorded: 0, NotDecodable: 10}}
	complete := []*verbatimv1.StreamLedger{{StreamId: "s", Captured: 10, Recorded: 10}}
	var recs []*kgo.Record
	add := func(id string, m interface{ ProtoReflect() protoreflect.Message }, at time.Time) {
		r, err := schemas.NewRecord(schemas.TopicRecordings, []byte(id), schemas.Envelope{ID: fmt.Sprintf("%s-%d", id, len(recs)), Tenant: "demo", CallID: id, OccurredAt: at}, m)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	for i, id := range []string{"complete", "partial", "reprocessed", "failed"} {
		at := t0.Add(time.Duration(i) * time.Minute)
		recs = append(recs, callRecords(t, km, "demo", id, "sip-"+id, "1001", "2002", at, time.Second)...)
		switch id {
		case "complete":
			add(id, &verbatimv1.RecordingStored{CallId: id, RecordingId: "r-" + id, StoredAt: timestamppb.New(at), Ledgers: complete}, at)
		case "partial":
			add(id, &verbatimv1.RecordingStored{CallId: id, RecordingId: "r-" + id, StoredAt: timestamppb.New(at), Ledgers: partial}, at)
		case "reprocessed":
			add(id, &verbatimv1.RecordingStored{CallId: id, RecordingId: "r0-" + id, StoredAt: timestamppb.New(at), Ledgers: partial}, at)
			add(id, &verbatimv1.RecordingStored{CallId: id, RecordingId: "r1-" + id, StoredAt: timestamppb.New(at), Ledgers: complete,
				Supersedes: &verbatimv1.Supersession{RecordingId: "r0-" + id, Generation: 1}}, at.Add(time.Second))
		case "failed":
			add(id, &verbatimv1.RecordingFailed{CallId: id, RecordingId: "r-" + id, Reason: "key missing", FailedAt: timestamppb.New(at)}, at)
		}
	}
	if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	ids := func(q search.Query) []string { t.Helper(); return demoCallIDs(ctx, t, conn, db, q) }
	for status, want := range map[string][]string{
		"complete": {"complete", "reprocessed"}, "partial": {"partial"}, "failed": {"failed"}, "no audio": nil,
	} {
		if got := ids(search.Query{Status: status}); !slices.Equal(got, want) {
			t.Errorf("status %s: %v, want %v", status, got, want)
		}
	}
	if _, err := search.Search(ctx, conn, db, search.Query{Tenant: "demo", Status: "great"}); err == nil {
		t.Error("an unknown status was accepted")
	}
	// Newest first, a page of 3 then the rest.
	rs, next, err := search.SearchPage(ctx, conn, db, search.Query{Tenant: "demo", Descending: true, Limit: 3})
	if err != nil || len(rs) != 3 || rs[0].CallID != "failed" || rs[2].CallID != "partial" || next == "" {
		t.Fatalf("newest first: %v %d %q", err, len(rs), next)
	}
	rest, next, err := search.SearchPage(ctx, conn, db, search.Query{Tenant: "demo", Descending: true, Limit: 3, After: next})
	if err != nil || len(rest) != 1 || rest[0].CallID != "complete" || next != "" {
		t.Fatalf("newest first, page 2: %v %+v %q", err, rest, next)
	}
}

// TestSearchBySkillGroupsAndPeripheralID: a supervisor's scope (the calls
// of their skill groups) and a CTI integration's lookup by the contact
// centre's id of a call.
func TestSearchBySkillGroupsAndPeripheralID(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i, c := range []struct{ id, tenant, group, pid string }{
		{"sales1", "demo", "sales", "pk-1"}, {"sales2", "demo", "sales", "pk-2"}, {"support1", "demo", "support", "pk-3"},
		{"none", "demo", "", ""}, {"other", "acme", "sales", "pk-1"},
	} {
		at := t0.Add(time.Duration(i) * time.Minute)
		recs = append(recs, callRecords(t, km, c.tenant, c.id, "sip-"+c.id, "1001", "2002", at, time.Second)...)
		if c.group == "" {
			continue
		}
		r, err := schemas.NewRecord(schemas.TopicMetadata, []byte(c.id), schemas.Envelope{ID: "md-" + c.id, Tenant: c.tenant, CallID: c.id, OccurredAt: at},
			&verbatimv1.MetadataAttached{CallId: c.id, OccurredAt: timestamppb.New(at), Source: "cti", SkillGroup: c.group, PeripheralIds: []string{c.pid}})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	ids := func(q search.Query) []string { t.Helper(); return demoCallIDs(ctx, t, conn, db, q) }
	for name, c := range map[string]struct {
		q    search.Query
		want []string
	}{
		"sales":             {search.Query{SkillGroups: []string{"sales"}}, []string{"sales1", "sales2"}},
		"sales and support": {search.Query{SkillGroups: []string{"support", "sales"}}, []string{"sales1", "sales2", "support1"}},
		"no such group":     {search.Query{SkillGroups: []string{"\x00none"}}, nil},
		"peripheral id":     {search.Query{PeripheralID: "pk-1"}, []string{"sales1"}}, // not acme's call of that id
		"id out of scope":   {search.Query{PeripheralID: "pk-3", SkillGroups: []string{"sales"}}, nil},
		"unknown id":        {search.Query{PeripheralID: "pk-9"}, nil},
	} {
		if got := ids(c.q); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

// demoCallIDs are the ids of the calls of tenant demo that q finds.
func demoCallIDs(ctx context.Context, t *testing.T, conn driver.Conn, db string, q search.Query) []string {
	t.Helper()
	q.Tenant = "demo"
	rs, err := search.Search(ctx, conn, db, q)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.CallID)
	}
	return out
}
