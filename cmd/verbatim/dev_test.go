package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevRecordsWhatIsIngested: with `verbatim dev` running, ingesting a
// capture is all it takes: its process role stores the recordings, and
// its operations endpoint counts them.
func TestDevRecordsWhatIsIngested(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := t.TempDir()
	d := startDev(ctx, t, "--data", data, "--kafka-port", "0", "--clickhouse", "", "--ops-addr", "127.0.0.1:0")
	out, errb := &d.out, &d.errb
	brokers := regexp.MustCompile(`kafka\s+(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())[1]
	if _, err := runOut(ctx, "ingest", "pcap", "--brokers", brokers, "--keyring", filepath.Join(data, "keyring.json"),
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap")); err != nil {
		t.Fatal(err)
	}
	// The two recordings announced (committed after their objects are
	// stored), then their objects and raw media in the store.
	d.awaitRecordings(ctx, brokers, 2)
	wavs, _ := filepath.Glob(filepath.Join(data, "objects", "demo", "2016", "11", "26", "*", "*.wav.sealed"))
	raws, _ := filepath.Glob(filepath.Join(data, "objects", "demo", "2016", "11", "26", "*", "*.rtp.sealed"))
	if len(wavs) != 2 || len(raws) != 2 {
		t.Fatalf("recordings announced, but the store holds %v %v\n%s%s", wavs, raws, out.String(), errb.String())
	}
	// The announcement is committed after the transaction's Progress
	// report: the endpoint says 2 once the processor's report arrives.
	m := regexp.MustCompile(`operations endpoint on (http://\S+)`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("dev: no operations endpoint:\n%s", errb.String())
	}
	if b := awaitMetrics(ctx, t, m[1], "verbatim_process_recordings_stored_total 2"); !strings.Contains(b, `verbatim_build_info{revision=`) {
		t.Fatalf("dev's metrics:\n%s", b)
	}
	d.stop()
	if !strings.Contains(out.String(), "role      process") {
		t.Fatalf("dev did not say it runs the process role:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "spool")); err != nil {
		t.Fatal(err)
	}
}

// TestDevRecordsSIPREC: `verbatim dev --roles process,siprec` is a SIPREC
// recording server: a session an SRC opens is stored as a recording.
func TestDevRecordsSIPREC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := t.TempDir()
	d := startDev(ctx, t, "--data", data, "--kafka-port", "0", "--clickhouse", "", "--roles", "process,siprec",
		"--siprec-listen", "tcp:127.0.0.1:15651", "--siprec-rtp-ports", "16900-16949")
	out, errb := &d.out, &d.errb
	if !strings.Contains(out.String(), "role      siprec: SIPREC recording server on tcp:127.0.0.1:15651") {
		t.Fatalf("dev did not say it runs the siprec role:\n%s", out.String())
	}
	src := stacktest.NewSRC(t, "tcp:127.0.0.1:15651", nil)
	sock := stacktest.MediaSocket(t)
	ct, body := stacktest.SIPRECBody(stacktest.AudioSDP(sock.LocalAddr().(*net.UDPAddr).AddrPort(), "RTP/AVP", 0, "a=sendonly", "a=label:1"), siprecMeta)
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess == nil {
		t.Fatalf("INVITE: %v %v", err, res)
	}
	for seq := range uint16(50) {
		if _, err := sock.WriteToUDPAddrPort(stacktest.AudioPacket(7, seq, 0, 1), sess.Ports()[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.D.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	// The process role announces the recording, its object stored.
	d.awaitRecordings(ctx, regexp.MustCompile(`kafka\s+(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())[1], 1)
	if wavs, _ := filepath.Glob(filepath.Join(data, "objects", "demo", "*", "*", "*", "*", "*.wav.sealed")); len(wavs) != 1 {
		t.Fatalf("recording announced, but the store holds %v\n%s%s", wavs, out.String(), errb.String())
	}
	d.stop()
}

// awaitRecordings returns once n RecordingStored events are committed on
// the dev broker's recordings topic: the consumer's fetch returns when
// they arrive, no quiet period decides it.
func (d *devRun) awaitRecordings(ctx context.Context, brokers string, n int) {
	t := d.t
	t.Helper()
	cl, err := kafkaclient.New(kafkaclient.Config{Brokers: []string{brokers}}, kgo.ConsumeTopics(schemas.TopicRecordings),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for seen := 0; seen < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d recordings announced\n%s%s", seen, n, d.out.String(), d.errb.String())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) == "verbatim.v1.RecordingStored" {
				seen++
			}
		})
	}
}

// devRun is a `verbatim dev` running in the test.
type devRun struct {
	t         *testing.T
	out, errb syncBuffer
	cancel    context.CancelFunc
	done      chan error
}

// startDev runs verbatim dev with args and returns once it says it runs.
func startDev(ctx context.Context, t *testing.T, args ...string) *devRun {
	t.Helper()
	d := &devRun{t: t, done: make(chan error, 1)}
	devCtx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	t.Cleanup(cancel)
	go func() { d.done <- run(devCtx, append([]string{"dev"}, args...), &d.out, &d.errb) }()
	for !strings.Contains(d.out.String(), "running") {
		select {
		case err := <-d.done:
			t.Fatalf("dev exited: %v\n%s%s", err, d.out.String(), d.errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return d
}

// stop stops it; it must exit cleanly.
func (d *devRun) stop() {
	d.t.Helper()
	d.cancel()
	if err := <-d.done; err != nil {
		d.t.Fatalf("dev: %v\n%s", err, d.errb.String())
	}
}

// TestDevServesTheAPI: `verbatim dev --roles api` serves the HTTPS API
// on the embedded default, with the local stack's Dex and ClickHouse: a
// signed-in supervisor gets their identity and a page of calls, and no
// token gets 401.
func TestDevServesTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := startDev(ctx, t, "--data", t.TempDir(), "--kafka-port", "0", "--clickhouse", stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR"),
		"--roles", "api", "--api-listen", addr)
	client := stacktest.TLSClient(t)
	tok := stacktest.DexToken(t, "supervisor@demo.example")
	get := func(path, tok string) (int, string) {
		t.Helper()
		for !strings.Contains(d.errb.String(), "api: listening on https://"+addr) {
			select {
			case err := <-d.done:
				t.Fatalf("dev exited: %v\n%s", err, d.errb.String())
			case <-ctx.Done():
				t.Fatalf("the api role did not start: %s", d.errb.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get("/v1/me", tok); status != 200 || !strings.Contains(body, `"tenant": "demo"`) {
		t.Fatalf("me: %d %s", status, body)
	}
	if status, body := get("/v1/calls?limit=1", tok); status != 200 || !strings.Contains(body, `"calls"`) {
		t.Fatalf("calls: %d %s", status, body)
	}
	if status, _ := get("/v1/calls", ""); status != 401 {
		t.Fatalf("no token: %d", status)
	}
	d.stop()
}

// TestDevStopsWhenARoleFails: `verbatim dev` whose api role cannot start
// (no certificate) does not go on without it: it stops its other roles
// and exits with the role's reason.
func TestDevStopsWhenARoleFails(t *testing.T) {
	ch := stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	t.Setenv("VERBATIM_TLS_CERT", "")
	t.Setenv("VERBATIM_TLS_KEY", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, []string{"dev", "--data", t.TempDir(), "--kafka-port", "0", "--clickhouse", ch, "--roles", "process,project,api",
		"--api-listen", "127.0.0.1:0"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "api: api: --tls-cert and --tls-key are required") || ctx.Err() != nil {
		t.Fatalf("dev with a failing role: %v (deadline %v)\n%s%s", err, ctx.Err(), out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "a role stopped: stopping the others") {
		t.Fatalf("dev said:\n%s", out.String())
	}
	if strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("the roles stopped with it are reported as failures: %v", err)
	}
}
