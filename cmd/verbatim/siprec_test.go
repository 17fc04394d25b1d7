package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
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

// TestSIPRECReplayOfARealFork: the two G.722 streams of a real SIPREC fork
// (MiaRec behind Kamailio, a Webex call; its INVITE is lost to a missing IP
// fragment, so the test SRC offers what the SRS's answer in the capture
// shows: labels 1 and 2, G.722) are sent to Verbatim's SRS from loopback at
// four times their pace. Both channels of the recording equal the
// capture's audio, decoded by ffmpeg from tshark's export.
func TestSIPRECReplayOfARealFork(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "siprec_miarec")
	s := e.startSRS("--listen", "tcp:127.0.0.1:15631", "--rtp-ports", "16700-16799")
	src := stacktest.NewSRC(t, "tcp:127.0.0.1:15631", nil)
	socks := []*net.UDPConn{stacktest.MediaSocket(t), stacktest.MediaSocket(t)}
	sdpOffer := "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	for i, c := range socks {
		sdpOffer += fmt.Sprintf("m=audio %d RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\na=sendonly\r\na=label:%d\r\n", c.LocalAddr().(*net.UDPAddr).Port, i+1)
	}
	meta := `<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="webex"><sipSessionID>46006780-839a-499d-b5c3-7d7d96a3557f</sipSessionID></session>
  <participant participant_id="caller"><nameID aor="sip:+12025550100@webex.example"><name>Caller</name></nameID></participant>
  <participant participant_id="agent"><nameID aor="sip:agent@webex.example"><name>Agent</name></nameID></participant>
  <stream stream_id="s1" session_id="webex"><label>1</label></stream>
  <stream stream_id="s2" session_id="webex"><label>2</label></stream>
  <participantstreamassoc participant_id="caller"><send>s1</send></participantstreamassoc>
  <participantstreamassoc participant_id="agent"><send>s2</send></participantstreamassoc>
</recording>`
	ct, body := stacktest.SIPRECBody(sdpOffer, meta)
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess == nil {
		t.Fatalf("INVITE: %v %v", err, res)
	}
	ports := sess.Ports()
	// The capture's streams by their SRS port: label 1 at :23832, label 2
	// at :22716.
	stream := map[uint16]int{23832: 0, 22716: 1}
	var first time.Time
	began := time.Now()
	sent := 0
	stacktest.EachUDP(t, "pcap/miarec_siprec_dual_channel_udp.pcap", func(at time.Time, _, dst netip.AddrPort, payload []byte) {
		i, ok := stream[dst.Port()]
		if !ok {
			return
		}
		if first.IsZero() {
			first = at
		}
		if d := at.Sub(first)/4 - time.Since(began); d > 0 {
			time.Sleep(d) // the capture's pace, four times faster
		}
		if _, err := socks[i].WriteToUDPAddrPort(payload, ports[i]); err != nil {
			t.Fatal(err)
		}
		sent++
	})
	if err := sess.D.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	out := s.shutdown()
	if !strings.Contains(out, fmt.Sprintf("%d RTP packets", sent)) {
		t.Fatalf("sent %d packets; siprec said: %s", sent, out)
	}
	e.processAndProject()
	rs := e.find()
	if len(rs) != 1 {
		t.Fatalf("%d calls found", len(rs))
	}
	pcap := stacktest.SharedTestdata(t, "pcap/miarec_siprec_dual_channel_udp.pcap")
	got := e.assertPlays(pcap, rs[0].CallID, []streamRef{{0x19473744, 9, "g722"}, {0x04AD37B4, 9, "g722"}})
	if cs := got.Recording.Completeness; cs == nil || cs.Status != schemas.StatusComplete {
		t.Fatalf("completeness %+v, ledgers %+v", cs, got.Recording.Ledgers)
	}
	t.Logf("%d packets replayed: %s", sent, got.Recording.Completeness)
}
