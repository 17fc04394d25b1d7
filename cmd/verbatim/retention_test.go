package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestRetentionClasses: three calls stored with the tenant's default of
// one hour; carol's is outbound (her address is local), dave's is tagged
// mifid after the call, erin's is in the party class. A dry run of
// verbatim retention apply counts 3 calls to extend and changes no lock;
// the run locks each call's objects to its class's keep from storage
// (ten years, seven, thirty days), and search shows the class; a second
// run finds each locked long enough, and a class shorter than a lock
// never shortens it. The expiry, even one hour later, has nothing due.
func TestRetentionClasses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "retention")
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, "--local", "192.0.2.10", partyCapture(t, "cls", "carol", "dave", "erin")))
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet",
		"--retention", "demo=1h"))
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))
	carol, dave, erin := e.find("--party", "sip:carol@example.com"), e.find("--party", "sip:dave@example.com"), e.find("--party", "sip:erin@example.com")
	if len(carol) != 1 || len(dave) != 1 || len(erin) != 1 {
		t.Fatalf("recorded: %d, %d, %d", len(carol), len(dave), len(erin))
	}
	ts := e.apiServer(0)
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/calls/"+dave[0].CallID+"/tags", strings.NewReader(`{"tags": ["mifid"]}`))
	req.Header.Set("Authorization", "Bearer "+stacktest.DexToken(t, "admin@demo.example"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "tag-dave-mifid")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("tagging dave's call: %s: %s", resp.Status, body)
	}
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))

	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}
	locks := func() map[string]time.Time {
		out := map[string]time.Time{}
		for _, c := range [][]string{{"carol", carol[0].Recording.ObjectKey, carol[0].Recording.RawObjectKey},
			{"dave", dave[0].Recording.ObjectKey, dave[0].Recording.RawObjectKey}, {"erin", erin[0].Recording.ObjectKey, erin[0].Recording.RawObjectKey}} {
			for _, k := range c[1:] {
				st, err := store.Stat(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if prev, ok := out[c[0]]; ok && !prev.Equal(st.RetainUntil) {
					t.Fatalf("%s's objects are locked until %v and %v", c[0], prev, st.RetainUntil)
				}
				out[c[0]] = st.RetainUntil
			}
		}
		return out
	}
	before := locks()
	for who, until := range before {
		if d := time.Until(until); d <= 0 || d > time.Hour {
			t.Fatalf("%s's call is locked until %v, want the default hour", who, until)
		}
	}
	classes := []string{"retention", "apply", "--class", "tag=mifid=2557d", "--class", "direction=outbound=3650d", "--class", "party=sip:erin@example.com=30d",
		"--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db}
	out := e.cmd(append(classes, "--dry-run")...)
	if !strings.Contains(out, "tenant demo: 3 calls in a class: 3 would be extended (dry run: nothing changed) (6 objects), 0 locked long enough, 0 not stored yet") {
		t.Fatalf("dry run: %s", out)
	}
	if fmt.Sprint(locks()) != fmt.Sprint(before) {
		t.Fatal("the dry run changed a lock")
	}
	out = e.cmd(classes...)
	t.Log(out)
	for _, want := range []string{"class tag=mifid (keep 61368h0m0s): 1 calls", "class direction=outbound (keep 87600h0m0s): 1 calls",
		"tenant demo: 3 calls in a class: 3 extended (6 objects), 0 locked long enough, 0 not stored yet"} {
		if !strings.Contains(out, want) {
			t.Fatalf("retention apply: %s\nwant %q", out, want)
		}
	}
	after := locks()
	for who, keep := range map[string]time.Duration{"carol": 3650 * 24 * time.Hour, "dave": 2557 * 24 * time.Hour, "erin": 30 * 24 * time.Hour} {
		r := map[string]time.Time{"carol": carol[0].Recording.StoredAt, "dave": dave[0].Recording.StoredAt, "erin": erin[0].Recording.StoredAt}[who]
		if want := r.Truncate(time.Second).Add(keep); !after[who].Equal(want) {
			t.Fatalf("%s's call is locked until %v, want %v (stored %v + %v)", who, after[who], want, r, keep)
		}
	}
	if err := store.Delete(ctx, erin[0].Recording.ObjectKey); !errors.Is(err, objstore.ErrRetained) {
		t.Fatalf("deleting erin's recording: %v", err)
	}
	// Again, and with a shorter class: nothing changes.
	if out := e.cmd(classes...); !strings.Contains(out, "3 calls in a class: 0 extended (0 objects), 3 locked long enough") {
		t.Fatalf("a second run: %s", out)
	}
	short := []string{"retention", "apply", "--class", "tag=mifid=1d", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db}
	if out := e.cmd(short...); !strings.Contains(out, "1 calls in a class: 0 extended (0 objects), 1 locked long enough") {
		t.Fatalf("a shorter class: %s", out)
	}
	if fmt.Sprint(locks()) != fmt.Sprint(after) {
		t.Fatal("a shorter class changed a lock")
	}
	if _, err := runOut(ctx, append(short[:2], "--class", "colour=red=1d", "--database", e.db)...); err == nil || !strings.Contains(err.Error(), "the kind is one of tag, group, party, direction") {
		t.Fatalf("an unknown kind of class: %v", err)
	}

	// Search shows the extended lock and its class.
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))
	got := e.find("--party", "sip:dave@example.com")
	if len(got) != 1 || got[0].Recording.RetentionClass != "tag=mifid" || !got[0].Recording.RetainUntil.Equal(after["dave"]) {
		t.Fatalf("dave's call in search: %+v", got[0].Recording)
	}
	// The expiry finds nothing due.
	if out := e.cmd("expire", "--dry-run", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db); !strings.HasPrefix(out, "tenant demo: 0 calls past") {
		t.Fatalf("expire: %s", out)
	}

	audited := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.HasPrefix(ev.GetAction(), "retention.") || ev.GetAction() == "call.retention_extend" {
			return ev.GetAction()
		}
		return ""
	})
	if want := map[string]int{"retention.apply": 3, "call.retention_extend": 3}; fmt.Sprint(audited) != fmt.Sprint(want) {
		t.Fatalf("audited %v, want %v", audited, want)
	}
}

// TestParseRetention: per tenant, * for the others; days or durations;
// malformed, repeated or negative values refused with the reason.
func TestParseRetention(t *testing.T) {
	f, err := parseRetention("demo=2557d, acme=87600h, *=365d")
	if err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]time.Duration{"demo": 2557 * 24 * time.Hour, "acme": 87600 * time.Hour, "other": 365 * 24 * time.Hour} {
		if got := f(tenant); got != want {
			t.Errorf("%s: %v, want %v", tenant, got, want)
		}
	}
	if f, err := parseRetention(""); err != nil || f != nil {
		t.Errorf("empty: %v", err)
	}
	if f, _ := parseRetention("demo=1d"); f("acme") != 0 {
		t.Error("a tenant not listed, without *, is locked")
	}
	for _, bad := range []string{"demo", "=1d", "demo=", "demo=xd", "demo=-1h", "demo=1d,demo=2d", "Bad Tenant=1d", "demo=99999999d"} {
		if _, err := parseRetention(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestParseClass: KIND=VALUE=KEEP, the value between the first and the
// last "="; unknown kinds, directions and keeps refused.
func TestParseClass(t *testing.T) {
	c, err := parseClass("party=sip:desk@bank.example;user=phone=3650d")
	if err != nil || c.Kind != "party" || c.Value != "sip:desk@bank.example;user=phone" || c.Keep != 3650*24*time.Hour {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"tag", "tag=1d", "colour=red=1d", "direction=sideways=1d", "tag==1d", "tag=mifid=0s", "tag=mifid=xd"} {
		if _, err := parseClass(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
