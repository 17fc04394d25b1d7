package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// srs is a `verbatim siprec` running in the test.
type srs struct {
	e      *cliEnv
	stop   context.CancelFunc
	done   chan error
	out    bytes.Buffer
	stderr syncBuffer
}

// startSRS runs verbatim siprec with args (listeners, ports) against e's
// broker and keyring, and returns once it listens.
func (e *cliEnv) startSRS(args ...string) *srs {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	s := &srs{e: e, stop: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- run(ctx, append([]string{"siprec", "--brokers", e.brokers, "--keyring", e.keyring}, args...), &s.out, &s.stderr)
	}()
	for !strings.Contains(s.stderr.String(), "SIPREC recording server listening") {
		select {
		case err := <-s.done:
			cancel()
			t.Fatalf("siprec: %v\n%s", err, s.stderr.String())
		case <-e.ctx.Done():
			cancel()
			t.Fatal("siprec never listened")
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Cleanup(cancel)
	return s
}

// shutdown stops the server, which ends the sessions still open and
// produces everything; it returns what the server printed.
func (s *srs) shutdown() string {
	s.e.t.Helper()
	s.stop()
	if err := <-s.done; err != nil {
		s.e.t.Fatalf("siprec: %v\n%s%s", err, s.out.String(), s.stderr.String())
	}
	s.e.t.Log(s.out.String())
	return s.out.String()
}

// sippSRC runs SIPp's SIPREC client scenario of testdata/sipp against the
// SRS at port with extra arguments (transport, call counts).
func sippSRC(ctx context.Context, t *testing.T, srsPort, localPort, mediaPort int, extra ...string) {
	t.Helper()
	sipp, dir := stacktest.SIPp(t)
	scen, err := filepath.Abs("testdata/sipp/siprec_src.xml")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-sf", scen, fmt.Sprintf("127.0.0.1:%d", srsPort), "-i", "127.0.0.1", "-p", fmt.Sprint(localPort),
		"-mp", fmt.Sprint(mediaPort), "-nostdin", "-timeout", "90s", "-timeout_error"}, extra...)
	cmd := exec.CommandContext(ctx, sipp, args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Logf("%s", b[max(0, len(b)-3000):])
		t.Fatalf("sipp SRC: %v", err)
	}
}

// checkSIPRECCall checks what search says of a session of the SIPp SRC:
// source SIPREC, the metadata's two participants as parties, the vendor
// extension as a call variable, complete, and the SRC's audio in the
// recording, sample for sample, at its RTP time.
func (e *cliEnv) checkSIPRECCall(r search.Result) {
	t := e.t
	t.Helper()
	got := e.assertPlays(stacktest.SharedTestdata(t, "pcap/sipp_g711a.pcap"), r.CallID, []streamRef{{0xDEE0EE8F, 8, "al"}})
	if cs := got.Recording.Completeness; cs == nil || cs.Status != schemas.StatusComplete {
		t.Fatalf("%s: completeness %+v, ledgers %+v", r.SIPCallID, cs, got.Recording.Ledgers)
	}
	var aors []string
	var agent, customer search.Party
	for _, p := range got.Parties {
		aors = append(aors, p.URI)
		switch p.Role {
		case "PARTICIPANT_ROLE_CALLER":
			agent = p
		case "PARTICIPANT_ROLE_CALLEE":
			customer = p
		}
	}
	if len(got.Parties) != 2 || !strings.HasPrefix(agent.URI, "sip:agent") || !strings.HasPrefix(agent.DisplayName, "Agent ") ||
		!strings.HasPrefix(customer.URI, "sip:+4420790") || !strings.HasPrefix(customer.Number, "+4420790") {
		t.Fatalf("%s: parties %+v, want the metadata's agent and customer", r.SIPCallID, got.Parties)
	}
	if !slices.ContainsFunc(got.Metadata, func(m search.Metadata) bool { return strings.HasPrefix(m.Variables["ucid"], "00001") }) {
		t.Fatalf("%s: metadata %+v, want the vendor extension ucid as a call variable", r.SIPCallID, got.Metadata)
	}
	t.Logf("%s: %s; parties %v", r.SIPCallID, got.Recording.Completeness, aors)
}

// TestSIPRECSessionFromSIPp: SIPp, as an SRC, opens a recording session
// over UDP with one stream, adds a second by re-INVITE, pauses and resumes
// both, plays G.711 on the first and hangs up. The recording is searchable
// by the metadata's participants and holds the SRC's audio.
func TestSIPRECSessionFromSIPp(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		transport string
		port      int
	}{{"udp", 15601}, {"tcp", 15611}} {
		t.Run(tc.transport, func(t *testing.T) {
			e := newCLIEnv(ctx, t, "siprec_"+tc.transport)
			s := e.startSRS("--listen", fmt.Sprintf("%s:127.0.0.1:%d", tc.transport, tc.port), "--rtp-ports", fmt.Sprintf("%d-%d", tc.port+1000, tc.port+1099))
			mode := "u1"
			if tc.transport == "tcp" {
				mode = "t1"
			}
			sippSRC(ctx, t, tc.port, tc.port+1, tc.port+2000, "-t", mode, "-m", "1")
			out := s.shutdown()
			if !strings.Contains(out, "1 sessions recorded (at most 1 at once)") {
				t.Fatalf("siprec said: %s", out)
			}
			e.processAndProject()
			rs := e.find()
			if len(rs) != 1 {
				t.Fatalf("%d calls found, want the one session", len(rs))
			}
			e.checkSIPRECCall(rs[0])
		})
	}
}

// TestSIPREC100ConcurrentSessions: SIPp opens 100 recording sessions at
// once (50 a second, each some 9 s long); all 100 are recorded, complete,
// each with the SRC's audio sample for sample.
func TestSIPREC100ConcurrentSessions(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "siprec_100")
	s := e.startSRS("--listen", "udp:127.0.0.1:15621", "--rtp-ports", "16000-16999")
	sippSRC(ctx, t, 15621, 15622, 17000, "-t", "u1", "-m", "100", "-l", "100", "-r", "50")
	out := s.shutdown()
	if !strings.Contains(out, "100 sessions recorded (at most 100 at once)") || strings.Contains(out, "refused") {
		t.Fatalf("siprec said: %s", out)
	}
	e.processAndProject()
	rs := e.find("--limit", "1000")
	if len(rs) != 100 {
		t.Fatalf("%d calls found, want the 100 sessions", len(rs))
	}
	for _, r := range rs {
		e.checkSIPRECCall(r)
	}
}
