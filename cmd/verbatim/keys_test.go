package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestKeysRotateRewrapRetire: a tenant's KEK rotated; retiring the old
// version refused while the recordings' keys are under it; the keys
// rewrapped; the old version retired; every recording still plays, byte
// for byte as before; each step is in the audit log.
func TestKeysRotateRewrapRetire(t *testing.T) {
	e, ctx := g711Env(t, "keys", 3*time.Minute)
	kargs := func(args ...string) []string {
		return append(args, "--brokers", e.brokers, "--keyring", e.keyring, "--tenant", "demo")
	}
	calls := e.find()
	before := map[string][]byte{}
	for _, c := range calls {
		before[c.CallID] = e.play(c.CallID)
	}
	status := e.cmd(kargs("keys", "status")...)
	if !strings.Contains(status, "KEK version 1 is the latest") || !strings.Contains(status, "version 1:") {
		t.Fatalf("status: %s", status)
	}
	e.cmd(kargs("keys", "rotate")...)
	if out, err := runOut(ctx, kargs("keys", "retire", "--below", "2")...); err == nil || !strings.Contains(err.Error(), "rewrap first") {
		t.Fatalf("retire before the rewrap: %v\n%s", err, out)
	}
	out := e.cmd(kargs("keys", "rewrap")...)
	if !strings.Contains(out, "every data key is under version 2 now") {
		t.Fatalf("rewrap: %s", out)
	}
	if out := e.cmd(kargs("keys", "rewrap")...); !strings.Contains(out, "0 data keys rewrapped") {
		t.Fatalf("a second rewrap: %s", out)
	}
	e.cmd(kargs("keys", "retire", "--below", "2")...)
	if status := e.cmd(kargs("keys", "status")...); !strings.Contains(status, "versions below 2 are retired") || strings.Contains(status, "version 1:") {
		t.Fatalf("status after: %s", status)
	}
	for _, c := range calls {
		if !bytes.Equal(e.play(c.CallID), before[c.CallID]) {
			t.Fatalf("%s plays otherwise after the rewrap", c.CallID)
		}
	}
	e.cmd("project", "audit", "--exit-when-idle", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db)
	var steps []auditlog.Entry
	for _, action := range []string{"key.rotate", "key.rewrap", "key.retire"} {
		var es []auditlog.Entry
		if err := json.Unmarshal([]byte(e.cmd("audit", "search", "--tenant", "demo", "--action", action, "--format", "json",
			"--keyring", e.keyring, "--database", e.db)), &es); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, es...)
	}
	// rotate, rewrap twice, retire refused then done
	if len(steps) != 5 {
		t.Fatalf("audited key steps: %+v", steps)
	}
}

// TestKeysRewrapKilled: 10,000 data keys, the KEK rotated, `verbatim keys
// rewrap` killed (SIGKILL) after 2,000 keys; run again, it rewraps the
// rest and no more; the old version is then retired and every key is
// under the new one.
func TestKeysRewrapKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "verbatim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	stacktest.PlainKafka(t) // the commands below reach kfake
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	ring, err := keys.OpenKeyring(keyring)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafkaclient.New(kafkaclient.Config{Brokers: cluster.ListenAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	const n = 10000
	var recs []*kgo.Record
	for i := range n {
		dk, err := ring.GenerateDataKey(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("dk-%05d", i)
		r, err := schemas.NewRecord(schemas.TopicKeys, []byte(id), schemas.Envelope{ID: id, Tenant: "demo", OccurredAt: time.Now()},
			&verbatimv1.DataKey{KeyId: id, Tenant: "demo", WrappedDek: dk.Wrapped.Ciphertext, KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion,
				KeyManager: ring.Kind(), Purpose: "call"})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	args := func(a ...string) []string {
		return append(a, "--brokers", brokers, "--keyring", keyring, "--tenant", "demo")
	}
	run := func(a ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, args(a...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("verbatim %v: %v\n%s", a, err, out)
		}
		return string(out)
	}
	run("keys", "rotate")
	c := exec.CommandContext(ctx, bin, args("keys", "rewrap", "--batch", "100")...)
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	progress := regexp.MustCompile(`rewrap: (\d+) of`)
	rd := bufio.NewReader(stderr)
	killedAt := 0
	for killedAt < 2000 {
		line, err := rd.ReadString('\r')
		if err != nil {
			t.Fatalf("rewrap ended before 2,000 keys: %v %q", err, line)
		}
		if m := progress.FindStringSubmatch(line); m != nil {
			killedAt, _ = strconv.Atoi(m[1])
		}
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = c.Wait()
	out := run("keys", "rewrap")
	m := regexp.MustCompile(`(\d+) data keys rewrapped to KEK version 2, (\d+) were already`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the resumed rewrap: %s", out)
	}
	rewrapped, already := atoi(m[1]), atoi(m[2])
	t.Logf("killed after %d keys; the resumed run found %d rewrapped and rewrapped %d", killedAt, already, rewrapped)
	if already < killedAt || already+rewrapped != n {
		t.Fatalf("resumed: %d already, %d rewrapped, killed after %d of %d", already, rewrapped, killedAt, n)
	}
	run("keys", "retire", "--below", "2")
	if status := run("keys", "status"); !strings.Contains(status, "version 2: 10000 data keys") || strings.Contains(status, "version 1:") {
		t.Fatalf("status: %s", status)
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// TestKeysReencrypt: carol's recording key and dave's call are named as
// suspected compromised. A dry run changes nothing; a call's own key is
// refused with the reason. The run seals each recording again under a
// fresh key, as a recording that supersedes the old one (generation 1,
// "re-encrypted: ..."), locked as long as the old one: both calls play
// byte for byte as before and as tshark's export decoded by sox says;
// the old keys are gone from the registry, the old objects kept by their
// lock are ciphertext no live key opens; a second run skips both; every
// step is audited.
func TestKeysReencrypt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "reencrypt")
	capture := partyCapture(t, "re", "carol", "dave")
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, capture)
	e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet", "--retention", "demo=1h")
	project := func() {
		e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle")
	}
	project()
	refs := map[string][]streamRef{"re-0-carol@example.com": {{0x1000, 0, "ul"}, {0x2000, 0, "ul"}}, "re-1-dave@example.com": {{0x1001, 0, "ul"}, {0x2001, 0, "ul"}}}
	old := map[string]search.Result{}
	before := map[string][]byte{}
	for sip, r := range refs {
		c := e.assertPlays(capture, sip, r)
		old[sip], before[sip] = c, e.play(c.CallID)
	}
	carol, dave := old["re-0-carol@example.com"], old["re-1-dave@example.com"]
	kcfg := stacktest.KafkaFor(strings.Split(e.brokers, ","), "")
	callKey := map[string]string{} // call id -> its own key
	liveKeys := func() map[string]bool {
		reg, err := keyops.Read(ctx, kcfg, "demo")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, k := range reg.Keys {
			out[k.GetKeyId()] = true
			if k.GetPurpose() == "call" {
				callKey[k.GetCallId()] = k.GetKeyId()
			}
		}
		return out
	}
	if k := liveKeys(); !k[carol.Recording.KeyID] || !k[dave.Recording.KeyID] {
		t.Fatalf("the recording keys are not in the registry: %v", k)
	}
	args := []string{"keys", "reencrypt", "--tenant", "demo", "--key", carol.Recording.KeyID, "--call", dave.CallID, "--reason", "incident 7: a backup of keys leaked",
		"--json", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects}
	report := func(args ...string) processors.ReencryptReport {
		t.Helper()
		var rep processors.ReencryptReport
		if err := json.Unmarshal([]byte(e.cmd(args...)), &rep); err != nil {
			t.Fatal(err)
		}
		st := rep.Stats
		if st.Selected != st.Reencrypted+st.Skipped+st.Failed+st.Remaining {
			t.Fatalf("the report does not balance: %+v", st)
		}
		return rep
	}
	dry := report(append(args, "--dry-run", "--key", callKey[carol.CallID])...)
	if st := dry.Stats; st.Selected != 3 || st.Remaining != 2 || st.Skipped != 1 || st.Reencrypted != 0 {
		t.Fatalf("dry run: %+v", dry)
	}
	if r := dry.Recordings[1]; !strings.Contains(r.Skip, "own key: it seals the captured media and metadata") {
		t.Fatalf("a call key named: %+v", r)
	}
	if k := liveKeys(); !k[carol.Recording.KeyID] || !k[dave.Recording.KeyID] {
		t.Fatal("the dry run shredded a key")
	}

	rep := report(args...)
	if st := rep.Stats; st.Selected != 2 || st.Reencrypted != 2 || st.Remaining != 0 {
		t.Fatalf("reencrypt: %+v", rep)
	}
	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}
	project()
	k := liveKeys()
	for sip, r := range refs {
		was := old[sip]
		now := e.assertPlays(capture, sip, r)
		rec := now.Recording
		if rec.RecordingID == was.Recording.RecordingID || rec.Generation != 1 || rec.Supersedes != was.Recording.RecordingID ||
			!strings.HasPrefix(rec.SupersedeReason, "re-encrypted: incident 7") || rec.KeyID == was.Recording.KeyID || rec.PlaintextSHA256 != was.Recording.PlaintextSHA256 {
			t.Fatalf("%s after: %+v\nbefore: %+v", sip, rec, was.Recording)
		}
		if !bytes.Equal(e.play(now.CallID), before[sip]) {
			t.Fatalf("%s plays otherwise after the re-encryption", sip)
		}
		if k[was.Recording.KeyID] || !k[rec.KeyID] || !k[callKey[was.CallID]] {
			t.Fatalf("%s: old key live %v, new key live %v, call key live %v", sip, k[was.Recording.KeyID], k[rec.KeyID], k[callKey[was.CallID]])
		}
		oldInfo, err := store.Stat(ctx, was.Recording.ObjectKey)
		if err != nil {
			t.Fatalf("%s: the old object, locked for an hour, is gone: %v", sip, err)
		}
		newInfo, err := store.Stat(ctx, rec.ObjectKey)
		if err != nil || newInfo.RetainUntil.Before(oldInfo.RetainUntil) {
			t.Fatalf("%s: new object locked until %v, the old one until %v: %v", sip, newInfo.RetainUntil, oldInfo.RetainUntil, err)
		}
	}
	for _, r := range rep.Recordings {
		if len(r.OldLocked) != 1 || len(r.OldDeleted) != 0 || len(r.OldNotDeleted) != 0 || len(r.Objects) != 1 {
			t.Fatalf("old objects: %+v", r)
		}
	}
	again := report(args...)
	if st := again.Stats; st.Selected != 2 || st.Skipped != 2 || st.Reencrypted != 0 || !strings.Contains(again.Recordings[0].Skip, "already re-encrypted as") ||
		!strings.Contains(again.Recordings[1].Skip, "for this reason") {
		t.Fatalf("a second run: %+v", again)
	}
	if _, err := runOut(ctx, "keys", "reencrypt", "--tenant", "demo", "--key", "x", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects); err == nil ||
		!strings.Contains(err.Error(), "--reason") {
		t.Fatalf("no reason: %v", err)
	}

	audited := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.Contains(ev.GetAction(), "reencrypt") {
			return ev.GetAction() + " " + result(ev)
		}
		return ""
	})
	// the dry run, the run, the second run (the one without a reason
	// did nothing)
	if want := map[string]int{"key.reencrypt success": 3, "recording.reencrypt success": 2}; fmt.Sprint(audited) != fmt.Sprint(want) {
		t.Fatalf("audited %v, want %v", audited, want)
	}
}
