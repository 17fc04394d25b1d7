package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// auditCounts reads the audit topic of brokers to its end and counts its
// events by the label each gets ("" leaves one out); a record that is not
// an AuditEvent fails the test.
func auditCounts(ctx context.Context, t *testing.T, brokers string, label func(*verbatimv1.AuditEvent) string) map[string]int {
	t.Helper()
	cl, err := kafkaclient.New(stacktest.KafkaFor(strings.Split(brokers, ","), ""), kgo.ConsumeTopics(schemas.TopicAudit),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]int{}
	stacktest.ReadBack(ctx, t, cl, func(r *kgo.Record) {
		var ev verbatimv1.AuditEvent
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Errorf("audit topic, offset %d: not an AuditEvent: %v", r.Offset, err)
			return
		}
		if l := label(&ev); l != "" {
			got[l]++
		}
	}, schemas.TopicAudit)
	return got
}

// result is an audit event's result in lower case: success, denied, error.
func result(ev *verbatimv1.AuditEvent) string {
	return strings.ToLower(strings.TrimPrefix(ev.GetResult().String(), "AUDIT_RESULT_"))
}

// playAs writes a call's recording as `verbatim play` does for tenant,
// and returns its bytes; it fails if play does.
func (e *cliEnv) playAs(tenant, callID string) ([]byte, error) {
	out := filepath.Join(e.t.TempDir(), "x.wav")
	if o, err := runOut(e.ctx, "play", callID, "--tenant", tenant, "-o", out, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects); err != nil {
		return nil, fmt.Errorf("%w: %s", err, o)
	}
	return os.ReadFile(out)
}

// play is playAs for tenant demo, failing the test on an error.
func (e *cliEnv) play(callID string) []byte {
	e.t.Helper()
	b, err := e.playAs("demo", callID)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// awaitMetrics asks the operations endpoint at base for its metrics until
// each sample of want ("name value", a whole line) is among them, and
// returns them: the role's own count of what it did is the event waited
// for.
func awaitMetrics(ctx context.Context, t *testing.T, base string, want ...string) string {
	t.Helper()
	for {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, "\n"+w+"\n") {
				missing = w
				break
			}
		}
		if missing == "" {
			return body
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never said %q:\n%s", base, missing, body)
		case <-time.After(50 * time.Millisecond): // the interval of asking
		}
	}
}

// rebuiltDatabase names a database beside the test's for a projection
// rebuilt from the topics, dropped at the end.
func (e *cliEnv) rebuiltDatabase() string {
	t := e.t
	rebuilt := e.db + "_rebuilt"
	t.Cleanup(func() {
		if conn, _, err := (chFlags{addr: ptr(stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")), db: &rebuilt}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+rebuilt+"`")
			conn.Close()
		}
	})
	return rebuilt
}
