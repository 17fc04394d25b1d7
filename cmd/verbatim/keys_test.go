package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
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
	"github.com/verbatimrec/verbatim/internal/keys"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
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
