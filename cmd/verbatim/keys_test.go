package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	auditlog "github.com/verbatimrec/verbatim/projections/audit"
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
	play := func(callID string) []byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), "x.wav")
		e.cmd("play", callID, "-o", out, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := map[string][]byte{}
	for _, c := range calls {
		before[c.CallID] = play(c.CallID)
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
		if !bytes.Equal(play(c.CallID), before[c.CallID]) {
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
