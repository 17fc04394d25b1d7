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
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestProcessKilled is the acceptance test for crashes, on the whole local
// stack (Kafka, MinIO, Vault, ClickHouse): `verbatim process` is killed
// with SIGKILL while a call is open, started again, and the calls come out
// recorded once each, complete, with the same audio.
func TestProcessKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newStackCLI(ctx, t, "k")
	brokers, tenant, db, mustRun := e.brokers, e.tenant, e.db, e.mustRun
	group := "verbatim-process-kill-" + e.run
	startAtEnd(ctx, t, brokers, group)
	mustRun("ingest", "pcap", "--tenant", tenant, "--brokers", brokers, stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))

	// First run: killed once a transaction has committed with a call open.
	procArgs := []string{"process", "--brokers", brokers, "--group", group, "--instance", "kill-test-" + e.run, "--tenants", tenant,
		"--spool", t.TempDir(), "--max-poll-records", "2"}
	progress := regexp.MustCompile(`process: (\d+) media records, (\d+) recordings stored, \d+ failed, (\d+) calls open`)
	killed := e.killWhen(procArgs, func(line string) bool {
		m := progress.FindStringSubmatch(line)
		if m == nil {
			return false
		}
		records, _ := strconv.Atoi(m[1])
		open, _ := strconv.Atoi(m[3])
		return open > 0 && records >= 4
	})
	if !killed {
		t.Fatal("the processor finished before it could be killed with a call open")
	}

	// Second run: the same instance (it fences the dead one's transaction).
	out := mustRun(append(procArgs, "--exit-when-idle", "--quiet")...)
	t.Log(out)
	if !strings.Contains(out, "read again to rebuild") || strings.Contains(out, " 0 read again") {
		t.Fatalf("the restarted processor rebuilt nothing: %s", out)
	}
	mustRun("project", "search", "--brokers", brokers, "--database", db, "--group", "verbatim-project-kill-"+e.run, "--exit-when-idle")
	var rs []search.Result
	if err := json.Unmarshal([]byte(e.stdout("search", "--json", "--database", db)), &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d calls found, want 2", len(rs))
	}
	for _, r := range rs {
		if c := r.Recording.Completeness; r.Status != search.StatusRecorded || c == nil || c.Status != schemas.StatusComplete ||
			(c.AudioRecorded != 425 && c.AudioRecorded != 414) {
			t.Fatalf("%s: %s %+v", r.SIPCallID, r.Status, r.Recording)
		}
		e.assertG711Plays(r)
	}
	// Exactly one RecordingStored per call on the topic, too.
	var stored bytes.Buffer
	fmt.Fprint(&stored, mustRun("search", "--database", db))
	t.Log("\n" + stored.String())
}

// splitCR splits progress output on \r as well as \n.
func splitCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\r' || b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func startAtEnd(ctx context.Context, t *testing.T, brokers, group string) {
	t.Helper()
	cl, err := kafkaclient.New(stacktest.KafkaFor(strings.Split(brokers, ","), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	stacktest.StartGroupAtEnd(ctx, t, cl, group, schemas.TopicMedia)
}

// TestReprocessKilled: on the whole local stack, `verbatim reprocess` is
// killed with SIGKILL after its first committed transaction, with the
// next one open, and started again. Each of the six recordings (a capture
// of two calls ingested three times) is superseded exactly once, by the
// recording the plan named; the restarted job says how many an earlier
// run did; and every call's current recording still holds its audio as
// tshark's export decoded by sox has it.
func TestReprocessKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newStackCLI(ctx, t, "r")
	brokers, tenant, db, run, mustRun := e.brokers, e.tenant, e.db, e.run, e.mustRun
	group, job := "verbatim-process-rkill-"+run, "kill-"+run
	startAtEnd(ctx, t, brokers, group)
	capture := stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap")
	for range 3 {
		mustRun("ingest", "pcap", "--tenant", tenant, "--brokers", brokers, capture)
	}
	t.Log(mustRun("process", "--brokers", brokers, "--group", group, "--instance", "rkill-"+run, "--tenants", tenant,
		"--spool", t.TempDir(), "--exit-when-idle", "--quiet"))

	args := []string{"reprocess", "--job", job, "--tenant", tenant, "--brokers", brokers, "--force", "--reason", "kill test",
		"--workers", "1", "--calls-per-transaction", "1", "--spool", t.TempDir()}
	progress := regexp.MustCompile(`reprocess: (\d+) of 6 done`)
	killed := e.killWhen(args, func(line string) bool {
		m := progress.FindStringSubmatch(line)
		return m != nil && m[1] != "6"
	})
	if !killed {
		t.Fatal("the job finished before it could be killed")
	}
	out := mustRun(append(args, "--json")...)
	var rep struct {
		Plan []struct {
			CallID         string `json:"call_id"`
			RecordingID    string `json:"recording_id"`
			NewRecordingID string `json:"new_recording_id"`
			Done           bool   `json:"done"`
		}
		Stats struct{ ToDo, Done, Failed, Remaining int }
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	doneBefore := 0
	planned := map[string]string{}
	for _, pl := range rep.Plan {
		if pl.Done {
			doneBefore++
		}
		planned[pl.NewRecordingID] = pl.RecordingID
	}
	if rep.Stats.ToDo != 6 || rep.Stats.Done != 6 || rep.Stats.Failed != 0 || rep.Stats.Remaining != 0 || doneBefore == 0 || doneBefore == 6 {
		t.Fatalf("restarted job: %+v, %d done by the killed run", rep.Stats, doneBefore)
	}

	// On the topic: six reprocessed recordings, each superseding another.
	cl, err := kafkaclient.New(stacktest.KafkaFor(strings.Split(brokers, ","), ""), kgo.ConsumeTopics(schemas.TopicRecordings),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	superseded := map[string]int{}
	stacktest.ReadBack(ctx, t, cl, func(r *kgo.Record) {
		if string(schemas.HeaderValue(r.Headers, schemas.HeaderTenant)) != tenant ||
			string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) != "verbatim.v1.RecordingStored" {
			return
		}
		var ev verbatimv1.RecordingStored
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		if s := ev.GetSupersedes(); s != nil {
			if planned[ev.GetRecordingId()] != s.GetRecordingId() {
				t.Fatalf("recording %s supersedes %s; the plan said %q", ev.GetRecordingId(), s.GetRecordingId(), planned[ev.GetRecordingId()])
			}
			superseded[s.GetRecordingId()]++
		}
	}, schemas.TopicRecordings)
	if len(superseded) != 6 {
		t.Fatalf("%d recordings superseded, want 6: %v", len(superseded), superseded)
	}
	for id, n := range superseded {
		if n != 1 {
			t.Fatalf("recording %s superseded %d times", id, n)
		}
	}

	mustRun("project", "search", "--brokers", brokers, "--database", db, "--group", "verbatim-project-rkill-"+run, "--exit-when-idle")
	var rs []search.Result
	if err := json.Unmarshal([]byte(e.stdout("search", "--json", "--history", "--database", db)), &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d calls found, want 2", len(rs))
	}
	for _, r := range rs {
		if rec := r.Recording; rec.Generation != 1 || rec.Completeness == nil || rec.Completeness.Status != schemas.StatusComplete || len(r.History) != 5 {
			t.Fatalf("%s: current recording %+v, %d others", r.SIPCallID, rec, len(r.History))
		}
		e.assertG711Plays(r)
	}
	t.Log("\n" + mustRun("search", "--history", "--database", db))
}

// stackCLI runs the verbatim binary, as a user would, against the whole
// local stack (Kafka, MinIO, Vault, ClickHouse), for a tenant and a
// ClickHouse database of its own (dropped at the end). The tenant's
// key-encryption key is created as an administrator would.
type stackCLI struct {
	ctx                           context.Context
	t                             *testing.T
	bin, brokers, tenant, db, run string
}

func newStackCLI(ctx context.Context, t *testing.T, prefix string) *stackCLI {
	t.Helper()
	brokers := stacktest.Env(t, "VERBATIM_KAFKA_BROKERS")
	for _, v := range []string{"VERBATIM_CLICKHOUSE_ADDR", "VERBATIM_S3_ENDPOINT", "VERBATIM_VAULT_ADDR", "VERBATIM_VAULT_TOKEN"} {
		stacktest.Env(t, v)
	}
	e := &stackCLI{ctx: ctx, t: t, bin: filepath.Join(t.TempDir(), "verbatim"), brokers: brokers, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	e.tenant, e.db = prefix+e.run, "verbatim_"+prefix+"kill_"+e.run
	if out, err := exec.Command("go", "build", "-o", e.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if conn, _, err := (chFlags{addr: ptr(os.Getenv("VERBATIM_CLICKHOUSE_ADDR")), db: &e.db}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+e.db+"`")
			conn.Close()
		}
	})
	e.mustRun("topics", "--create", "--brokers", brokers)
	km, err := keys.NewVault(keys.VaultConfig{Address: os.Getenv("VERBATIM_VAULT_ADDR"), Token: os.Getenv("VERBATIM_VAULT_TOKEN"), CAFile: os.Getenv("VERBATIM_VAULT_CA"), CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.GenerateDataKey(ctx, e.tenant); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *stackCLI) verbatim(args ...string) *exec.Cmd {
	c := exec.CommandContext(e.ctx, e.bin, args...)
	c.Env = append(os.Environ(), "VERBATIM_TENANT="+e.tenant)
	return c
}

func (e *stackCLI) mustRun(args ...string) string {
	e.t.Helper()
	out, err := e.verbatim(args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("verbatim %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stdout runs verbatim with args and returns its standard output alone
// (what --json prints), failing the test with its standard error.
func (e *stackCLI) stdout(args ...string) string {
	e.t.Helper()
	var errb strings.Builder
	c := e.verbatim(args...)
	c.Stderr = &errb
	out, err := c.Output()
	if err != nil {
		e.t.Fatalf("verbatim %s: %v\n%s%s", strings.Join(args, " "), err, out, errb.String())
	}
	return string(out)
}

// assertG711Plays plays a call of wireshark_sip-rtp-g711.pcap and checks
// that its one stream is in the recording from the first sample, as
// tshark's export decoded by sox has it.
func (e *stackCLI) assertG711Plays(r search.Result) {
	t := e.t
	t.Helper()
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	e.mustRun("play", r.CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers)
	wav, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	ssrc, pt, codec := uint32(0x343DA99B), 0, "ul"
	if r.SIPCallID == "1-1968@10.0.2.20" {
		ssrc, pt, codec = 0x343FFA34, 8, "al"
	}
	left, right := wavChannels(t, wav)
	got := left
	if silent(left) {
		got = right
	}
	want, _ := tsharkRef(t, stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"), ssrc, pt, codec)
	if at := containsAt(got, want); at != 0 {
		t.Fatalf("%s: the recording's audio differs from the capture (at %d)", r.SIPCallID, at)
	}
}

// killWhen runs verbatim with args and kills it with SIGKILL at the first
// line of its standard error that kill accepts. It reports whether it
// killed it (false: it ended first).
func (e *stackCLI) killWhen(args []string, kill func(line string) bool) bool {
	t := e.t
	t.Helper()
	c := e.verbatim(args...)
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Wait() }()
	sc := bufio.NewScanner(stderr)
	sc.Split(splitCR)
	for sc.Scan() {
		if kill(sc.Text()) {
			if err := c.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed after: %s", sc.Text())
			return true
		}
	}
	return false
}
