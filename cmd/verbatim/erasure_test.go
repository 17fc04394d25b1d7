package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// partyCapture writes a capture of calls from the named callers (SIP user
// at example.com) to bob, 50 packets each way, one after another.
func partyCapture(t *testing.T, name string, callers ...string) string {
	t.Helper()
	s := stacktest.NewSynth(t, 10*time.Millisecond)
	for i, from := range callers {
		caller := netip.MustParseAddrPort(fmt.Sprintf("192.0.2.%d:%d", 10+i, 7000+2*i))
		callee := netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:%d", 10+i, 8000+2*i))
		callID := fmt.Sprintf("%s-%d-%s@example.com", name, i, from)
		msg := func(first, cseq, body string) []byte {
			return bytes.ReplaceAll(stacktest.DialogMessage(callID, first, cseq, body), []byte("sip:alice@example.com"), []byte("sip:"+from+"@example.com"))
		}
		s.Send(sigOf(caller), sigOf(callee), msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", stacktest.AudioSDP(caller, "RTP/AVP", 0)))
		s.Send(sigOf(callee), sigOf(caller), msg("SIP/2.0 200 OK", "1 INVITE", stacktest.AudioSDP(callee, "RTP/AVP", 0)))
		s.Send(sigOf(caller), sigOf(callee), msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
		for n := range 50 {
			s.Send(caller, callee, stacktest.AudioPacket(uint32(0x1000+i), uint16(100+n), 0, byte(0x10+i)))
			s.Send(callee, caller, stacktest.AudioPacket(uint32(0x2000+i), uint16(900+n), 0, byte(0x40+i)))
		}
		s.Send(sigOf(caller), sigOf(callee), msg("BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
		s.Send(sigOf(callee), sigOf(caller), msg("SIP/2.0 200 OK", "2 BYE", ""))
	}
	return s.WriteFile(name + ".pcap")
}

// TestErasureOfASubject: carol is a party of three calls among six, two
// in tenant demo (no retention) and one in tenant bank, which keeps its
// recordings ten years (object lock). Her erasure request in demo
// shreds her two calls' data keys, deletes their rows and objects: their
// saved ciphertext can no longer be opened by any key the registry
// gives, search by her address finds nothing, a rebuilt projection
// neither, and the other calls play byte for byte as before. In bank the
// request is refused for her call, with the retention obligation and the
// day it ends, and the call still plays. `erasure proof` proves the demo
// request; every step is in the audit log.
func TestErasureOfASubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "erasure")
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, "--tenant", "demo", partyCapture(t, "demo", "carol", "dave", "carol", "erin")))
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, "--tenant", "bank", partyCapture(t, "bank", "carol", "dave")))
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet",
		"--retention", "bank=3650d"))
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))
	find := func(tenant string, args ...string) []search.Result {
		return e.find(append([]string{"--tenant", tenant}, args...)...)
	}
	carolDemo, carolBank := find("demo", "--party", "sip:carol@example.com"), find("bank", "--party", "sip:carol@example.com")
	all := find("demo")
	if len(carolDemo) != 2 || len(carolBank) != 1 || len(all) != 4 || len(find("bank")) != 2 {
		t.Fatalf("recorded: carol %d in demo, %d in bank; %d calls in demo", len(carolDemo), len(carolBank), len(all))
	}
	play := func(tenant, callID string) ([]byte, error) {
		out := filepath.Join(t.TempDir(), "x.wav")
		if o, err := runOut(ctx, "play", callID, "-o", out, "--tenant", tenant, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring,
			"--objects", e.objects); err != nil {
			return nil, fmt.Errorf("%w: %s", err, o)
		}
		return os.ReadFile(out)
	}
	before := map[string][]byte{}
	for _, c := range append(all, carolBank...) {
		b, err := play(map[bool]string{true: "bank", false: "demo"}[c.CallID == carolBank[0].CallID], c.CallID)
		if err != nil {
			t.Fatal(err)
		}
		before[c.CallID] = b
	}
	store, err := objstore.NewFS(e.objects)
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, c := range carolDemo {
		objects = append(objects, c.Recording.ObjectKey, c.Recording.RawObjectKey)
	}
	kcfg := stacktest.KafkaFor(strings.Split(e.brokers, ","), "")
	keysBefore, err := keyops.Read(ctx, kcfg, "demo")
	if err != nil {
		t.Fatal(err)
	}
	carolKeys := map[string]string{} // key id: call
	for _, k := range keysBefore.Keys {
		for _, c := range carolDemo {
			if k.GetCallId() == c.CallID {
				carolKeys[k.GetKeyId()] = c.CallID
			}
		}
	}
	if len(carolKeys) != 4 {
		t.Fatalf("carol's demo calls have %d data keys, want 2 each (the call's, the recording's)", len(carolKeys))
	}

	lf := func(args ...string) []string {
		return append(args, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--database", e.db)
	}
	if out, err := runOut(ctx, lf("erasure", "request", "--tenant", "demo", "--subject", "carol@example.com")...); err == nil || !strings.Contains(err.Error(), "--reason") {
		t.Fatalf("a request without its ground: %v\n%s", err, out)
	}
	out := e.cmd(lf("erasure", "request", "--tenant", "demo", "--subject", "carol@example.com", "--request-id", "dsr-1", "--reason", "Art. 17(1)(a), ticket 1")...)
	t.Log(out)
	if !strings.Contains(out, "2 calls of the subject: 2 erased, 0 refused under retention, 0 refused under legal hold; finished") {
		t.Fatalf("demo erasure: %s", out)
	}
	out = e.cmd(lf("erasure", "request", "--tenant", "bank", "--subject", "carol@example.com", "--request-id", "dsr-1", "--reason", "Art. 17(1)(a), ticket 1")...)
	t.Log(out)
	due := time.Now().Add(3650 * 24 * time.Hour).UTC().Format(time.DateOnly)
	if !strings.Contains(out, "1 calls of the subject: 0 erased, 1 refused under retention") || !strings.Contains(out, "Art. 17(3)(b)") ||
		!strings.Contains(out, "until "+due) {
		t.Fatalf("bank erasure: %s", out)
	}

	// Nothing finds her in demo, her bank call is kept.
	if rs := find("demo", "--party", "sip:carol@example.com"); len(rs) != 0 {
		t.Fatalf("search still finds carol in demo: %+v", rs)
	}
	if rs := find("demo"); len(rs) != 2 {
		t.Fatalf("%d calls left in demo, want dave's and erin's", len(rs))
	}
	if rs := find("bank", "--party", "sip:carol@example.com"); len(rs) != 1 {
		t.Fatalf("carol's bank call: %+v", rs)
	}
	// Her calls' keys are shredded: the registry gives none (so a copy
	// of the objects taken before opens with no key), and the objects
	// are gone.
	regCl, err := kafkaclient.New(kcfg, keyreg.ConsumeOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg := keyreg.Start(regCl)
	defer reg.Close()
	for k, c := range carolKeys {
		if _, err := reg.Get(ctx, "demo", k); !errors.Is(err, keyreg.ErrShredded) {
			t.Fatalf("call %s: key %s: %v, want shredded", c, k, err)
		}
	}
	for _, c := range carolDemo {
		if _, err := play("demo", c.CallID); err == nil {
			t.Fatalf("call %s still plays", c.CallID)
		}
	}
	live, err := keyops.Read(ctx, kcfg, "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range live.Keys {
		for _, c := range carolDemo {
			if k.GetCallId() == c.CallID {
				t.Fatalf("the registry still holds key %s of erased call %s", k.GetKeyId(), c.CallID)
			}
		}
	}
	for _, k := range objects {
		if _, err := store.Stat(ctx, k); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("object %s: %v, want deleted", k, err)
		}
	}
	// The others play as before.
	for _, c := range append(find("demo"), carolBank...) {
		b, err := play(map[bool]string{true: "bank", false: "demo"}[c.CallID == carolBank[0].CallID], c.CallID)
		if err != nil || !bytes.Equal(b, before[c.CallID]) {
			t.Fatalf("call %s plays otherwise after the erasure: %v", c.CallID, err)
		}
	}

	// The proof.
	proof := e.cmd(lf("erasure", "proof", "dsr-1", "--tenant", "demo")...)
	t.Log(proof)
	if !strings.Contains(proof, "proven:") || strings.Count(proof, ": shredded") != 4 || strings.Count(proof, "rows in the search projection: 0") != 2 ||
		!strings.Contains(proof, "search finds 0 erased calls") || !strings.Contains(proof, "within 25h0m0s") {
		t.Fatalf("proof: %s", proof)
	}
	if out, err := runOut(ctx, lf("erasure", "proof", "dsr-1", "--tenant", "bank")...); err != nil || !strings.Contains(out, "kept: a retention obligation applies") {
		t.Fatalf("bank proof: %v\n%s", err, out)
	}

	// A projection rebuilt from the topics brings nothing of her back.
	rebuilt := e.rebuiltDatabase()
	e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", rebuilt, "--group", "rebuild", "--exit-when-idle")
	var rs []search.Result
	if err := json.Unmarshal([]byte(e.cmd("search", "--json", "--database", rebuilt, "--tenant", "demo")), &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("the rebuilt projection has %d calls of demo, want 2: %+v", len(rs), rs)
	}
	for _, r := range rs {
		for _, c := range carolDemo {
			if r.CallID == c.CallID {
				t.Fatalf("the rebuilt projection has erased call %s", c.CallID)
			}
		}
	}

	// The audit trail: the requests, two calls erased, one refused.
	got := auditCounts(ctx, t, e.brokers, func(ev *verbatimv1.AuditEvent) string {
		if strings.HasPrefix(ev.GetAction(), "erasure.") || ev.GetAction() == "call.erase" {
			return ev.GetAction() + " " + ev.GetResult().String()
		}
		return ""
	})
	want := map[string]int{"erasure.request AUDIT_RESULT_SUCCESS": 2, "call.erase AUDIT_RESULT_SUCCESS": 2, "call.erase AUDIT_RESULT_DENIED": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audited: %v, want %v", got, want)
	}
}
