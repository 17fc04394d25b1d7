package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestTenantOffboard: tenant demo (two calls, locked for an hour) and
// tenant acme (one call, under a legal hold). Offboarding demo is refused
// while its objects are locked and no waiver is given, and acme's while
// its hold is in force; a dry run changes nothing. Then demo's KEK is
// destroyed, its data keys shredded, its rows deleted; its locked
// objects stay, as ciphertext nothing opens: its calls no longer play
// or show in search, the keyring makes it no new key, and the report's
// proof holds. Acme's call plays as before, as tshark's export decoded
// by sox says. Every step is audited.
func TestTenantOffboard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "offboard")
	demoCap, acmeCap := partyCapture(t, "ob", "carol", "dave"), partyCapture(t, "oc", "erin")
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, "--tenant", "demo", demoCap)
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, "--tenant", "acme", acmeCap)
	e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet", "--retention", "demo=1h")
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	carol := e.assertPlays(demoCap, "ob-0-carol@example.com", []streamRef{{0x1000, 0, "ul"}, {0x2000, 0, "ul"}})
	e.assertPlays(demoCap, "ob-1-dave@example.com", []streamRef{{0x1001, 0, "ul"}, {0x2001, 0, "ul"}})
	acmeSearch := func() []search.Result {
		t.Helper()
		var rs []search.Result
		if err := json.Unmarshal([]byte(e.cmd("search", "--json", "--database", e.db, "--tenant", "acme")), &rs); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	erin := acmeSearch()
	if len(erin) != 1 {
		t.Fatalf("acme's calls: %+v", erin)
	}
	erinBefore, err := e.playAs("acme", erin[0].CallID)
	if err != nil {
		t.Fatal(err)
	}

	off := func(tenant string, args ...string) (lifecycle.OffboardReport, error) {
		t.Helper()
		out, err := runOut(ctx, append([]string{"tenant", "offboard", "--tenant", tenant, "--json", "--brokers", e.brokers, "--keyring", e.keyring,
			"--objects", e.objects, "--database", e.db}, args...)...)
		var rep lifecycle.OffboardReport
		if i := strings.Index(out, "{"); i >= 0 {
			if jerr := json.NewDecoder(strings.NewReader(out[i:])).Decode(&rep); jerr != nil {
				t.Fatalf("%v: %s", jerr, out)
			}
		}
		return rep, err
	}
	if _, err := off("demo", "--confirm", "dmeo"); err == nil || !strings.Contains(err.Error(), "confirm with its name") {
		t.Fatalf("a wrong confirmation: %v", err)
	}
	if rep, err := off("demo", "--confirm", "demo"); err == nil || !strings.Contains(err.Error(), "4 of 4 objects are under retention") || rep.KEKDestroyed {
		t.Fatalf("locked objects, no waiver: %v %+v", err, rep)
	}
	e.cmd("hold", "place", "--tenant", "acme", "--call-id", erin[0].CallID, "--label", "matter-9", "--reason", "litigation", "--brokers", e.brokers,
		"--keyring", e.keyring, "--objects", e.objects, "--database", e.db)
	if _, err := off("acme", "--confirm", "acme"); err == nil || !strings.Contains(err.Error(), "legal holds in force") {
		t.Fatalf("a tenant under a hold: %v", err)
	}
	waiver := []string{"--confirm", "demo", "--retention-waived", "contract ended 2026-11-30; the customer took export E-17"}
	dry, err := off("demo", append(waiver, "--dry-run")...)
	if err != nil || dry.DataKeys != 4 || dry.Calls != 2 || dry.Objects != 4 || dry.Locked != 4 || dry.KEKDestroyed || dry.Rows["participants"] == 0 {
		t.Fatalf("dry run: %v %+v", err, dry)
	}
	if _, err := e.playAs("demo", carol.CallID); err != nil {
		t.Fatalf("after the dry run: %v", err)
	}

	rep, err := off("demo", waiver...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offboarded: %+v", rep)
	if !rep.KEKDestroyed || rep.KeysShredded != 4 || rep.CallsErased != 2 || rep.ObjectsDeleted+len(rep.ObjectsKept) != rep.Objects || len(rep.ObjectsKept) != 4 || len(rep.Proof) != 5 {
		t.Fatalf("report: %+v", rep)
	}
	if _, err := e.playAs("demo", carol.CallID); err == nil {
		t.Fatal("an offboarded tenant's call still plays")
	}
	if rs := e.find("--tenant", "demo"); len(rs) != 0 {
		t.Fatalf("search still finds demo's calls: %+v", rs)
	}
	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Stat(ctx, carol.Recording.ObjectKey); err != nil {
		t.Fatalf("the locked object is gone before its lock ends: %v", err)
	}
	ring, err := keys.OpenKeyring(e.keyring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.GenerateDataKey(ctx, "demo"); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("a key for the offboarded tenant: %v", err)
	}
	// Rebuilt from the topics, the projection brings none of it back.
	rebuilt := e.rebuiltDatabase()
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", rebuilt, "--group", "rebuild", "--exit-when-idle")
	for tenant, want := range map[string]int{"demo": 0, "acme": 1} {
		var rs []search.Result
		if err := json.Unmarshal([]byte(e.cmd("search", "--json", "--database", rebuilt, "--tenant", tenant)), &rs); err != nil || len(rs) != want {
			t.Fatalf("the rebuilt projection has %d calls of %s, want %d: %v", len(rs), tenant, want, err)
		}
	}
	after, err := e.playAs("acme", erin[0].CallID)
	if err != nil || string(after) != string(erinBefore) {
		t.Fatalf("acme's call after demo's offboarding: %v", err)
	}
	t.Setenv("VERBATIM_TENANT", "acme")
	e.assertPlays(acmeCap, "oc-0-erin@example.com", []streamRef{{0x1000, 0, "ul"}, {0x2000, 0, "ul"}})

	audited := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.HasPrefix(ev.GetAction(), "tenant.") {
			return ev.GetTenant() + " " + ev.GetAction() + " " + result(ev)
		}
		return ""
	})
	want := map[string]int{"demo tenant.offboard denied": 1, "acme tenant.offboard denied": 1, "demo tenant.kek_destroy success": 1, "demo tenant.keys_shred success": 1,
		"demo tenant.rows_delete success": 1, "demo tenant.objects_delete success": 1, "demo tenant.offboard success": 1}
	if fmt.Sprint(audited) != fmt.Sprint(want) {
		t.Fatalf("audited %v, want %v", audited, want)
	}
}
