package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/srtp/v2"

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
			s := e.startSRS("--listen", fmt.Sprintf("%s:127.0.0.1:%d", tc.transport, tc.port), "--rtp-ports", fmt.Sprintf("%d-%d", tc.port+1000, tc.port+1099),
				"--ops-addr", "127.0.0.1:0")
			mode := "u1"
			if tc.transport == "tcp" {
				mode = "t1"
			}
			sippSRC(ctx, t, tc.port, tc.port+1, tc.port+2000, "-t", mode, "-m", "1")
			// Its operations endpoint counts the session (its report
			// every second is the event waited for).
			m := regexp.MustCompile(`operations endpoint on (http://\S+)`).FindStringSubmatch(s.stderr.String())
			if m == nil {
				t.Fatalf("siprec: no operations endpoint: %s", s.stderr.String())
			}
			awaitMetrics(ctx, t, m[1], "verbatim_siprec_sessions_total 1", "verbatim_siprec_sessions_open 0")
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

// TestSIPRECOverMutualTLSWithSRTP: an SRC with a client certificate the
// SRS allows opens a session over TLS and sends both streams as SDES-SRTP
// (the keys in its SDP, protected by TLS); the recording holds each
// stream's audio, decrypted, sample for sample. An SRC whose certificate
// names another host, or that has none, cannot connect.
func TestSIPRECOverMutualTLSWithSRTP(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ca := stacktest.NewCA(t)
	_, srvCert, srvKey := ca.Issue("127.0.0.1")
	sbc, _, _ := ca.Issue("sbc1.example")
	rogue, _, _ := ca.Issue("rogue.example")
	e := newCLIEnv(ctx, t, "siprec_tls")
	s := e.startSRS("--listen", "tls:127.0.0.1:15641", "--rtp-ports", "16800-16899", "--tls-cert", srvCert, "--tls-key", srvKey,
		"--tls-client-ca", ca.File, "--allow-name", "sbc1.example")

	// Refused: a certificate of another name, and none. The SRS ends the
	// handshake; the SRC learns it at its first read.
	options := "OPTIONS sip:srs@127.0.0.1:15641 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKopt\r\nFrom: <sip:src@127.0.0.1>;tag=1\r\n" +
		"To: <sip:srs@127.0.0.1>\r\nCall-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	for name, certs := range map[string][]tls.Certificate{"rogue.example": {rogue}, "no certificate": nil, "sbc1.example": {sbc}} {
		conn, err := tls.Dial("tcp", "127.0.0.1:15641", &tls.Config{RootCAs: ca.Pool, Certificates: certs, MinVersion: tls.VersionTLS12})
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err = conn.Write([]byte(options)); err == nil {
				var b [512]byte
				var n int
				n, err = conn.Read(b[:])
				if err == nil && !strings.HasPrefix(string(b[:n]), "SIP/2.0 200") {
					err = fmt.Errorf("answered %q", b[:n])
				}
			}
			conn.Close()
		}
		switch {
		case name == "sbc1.example" && err != nil:
			t.Fatalf("%s: the allowed SRC cannot reach the SRS: %v", name, err)
		case name != "sbc1.example" && (err == nil || !strings.Contains(err.Error(), "certificate")):
			t.Fatalf("%s: want the handshake refused for its certificate, got %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}

	src := stacktest.NewSRC(t, "tls:127.0.0.1:15641", &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{sbc}, MinVersion: tls.VersionTLS12})
	socks := []*net.UDPConn{stacktest.MediaSocket(t), stacktest.MediaSocket(t)}
	var keys [2][]byte
	sdpOffer := "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	for i, c := range socks {
		keys[i] = make([]byte, 30)
		if _, err := rand.Read(keys[i]); err != nil {
			t.Fatal(err)
		}
		sdpOffer += fmt.Sprintf("m=audio %d RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=sendonly\r\na=label:%d\r\n",
			c.LocalAddr().(*net.UDPAddr).Port, base64.StdEncoding.EncodeToString(keys[i]), i+1)
	}
	ct, body := stacktest.SIPRECBody(sdpOffer, siprecMeta)
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess == nil {
		t.Fatalf("mutual TLS session: %v %v", err, res)
	}
	ports := sess.Ports()
	for i, m := range sess.Answer.MediaDescriptions {
		if c, ok := m.Attribute("crypto"); !ok || !strings.HasPrefix(c, "1 AES_CM_128_HMAC_SHA1_80 inline:") || m.MediaName.Protos[1] != "SAVP" {
			t.Fatalf("answer line %d: %v %v, want RTP/SAVP and a crypto line of tag 1", i, m.MediaName, m.Attributes)
		}
	}
	// The plaintext, for the reference; SRTP on the wire.
	ref := stacktest.NewSynth(t, 10*time.Millisecond)
	for i, c := range socks {
		sctx, err := srtp.CreateContext(keys[i][:16], keys[i][16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		from := c.LocalAddr().(*net.UDPAddr).AddrPort()
		for seq := range uint16(150) {
			plain := stacktest.AudioPacket(0xA0+uint32(i), seq, 0, byte(0x55*i))
			ref.Send(from, ports[i], plain)
			enc, err := sctx.EncryptRTP(nil, plain, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.WriteToUDPAddrPort(enc, ports[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sess.D.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	out := s.shutdown()
	if !strings.Contains(out, "1 sessions recorded") || !strings.Contains(out, "300 RTP packets") {
		t.Fatalf("siprec said: %s", out)
	}
	e.processAndProject()
	rs := e.find()
	if len(rs) != 1 {
		t.Fatalf("%d calls found", len(rs))
	}
	got := e.assertPlays(ref.WriteFile("plaintext.pcap"), rs[0].CallID, []streamRef{{0xA0, 0, "ul"}, {0xA1, 0, "ul"}})
	if cs := got.Recording.Completeness; cs == nil || cs.Status != schemas.StatusComplete {
		t.Fatalf("completeness %+v, ledgers %+v", cs, got.Recording.Ledgers)
	}
}

// siprecMeta is a metadata document for two streams labelled 1 and 2.
const siprecMeta = `<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="s1"/>
  <participant participant_id="p1"><nameID aor="sip:alice@bank.example"/></participant>
  <participant participant_id="p2"><nameID aor="sip:+15551230000@pstn.example"/></participant>
  <stream stream_id="st1" session_id="s1"><label>1</label></stream>
  <stream stream_id="st2" session_id="s1"><label>2</label></stream>
  <participantstreamassoc participant_id="p1"><send>st1</send></participantstreamassoc>
  <participantstreamassoc participant_id="p2"><send>st2</send></participantstreamassoc>
</recording>`

// TestSIPRECAndPassiveCaptureOfOneCallAreLinked: a call seen by passive
// capture (its INVITE carries an RFC 7989 Session-ID) and recorded by an
// SBC's SIPREC fork (whose metadata names the session by the same
// Session-ID, as the SBC saw it) are two recordings of one conversation:
// search links each to the other. A call with another Session-ID is not
// linked.
func TestSIPRECAndPassiveCaptureOfOneCallAreLinked(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "siprec_link")
	const caller, callee = "a84b4c76e66710ab6f3a1c9e5d2b7f01", "f81d4fae7dec11d0a76500a0c91e6bf6"
	s := stacktest.NewSynth(t, 10*time.Millisecond)
	a, b := netip.MustParseAddrPort("192.0.2.10:6000"), netip.MustParseAddrPort("192.0.2.20:6000")
	for i, sid := range []string{caller, "0123456789abcdef0123456789abcdef"} {
		callID := fmt.Sprintf("passive-%d@example.com", i)
		invite := stacktest.DialogMessage(callID, "INVITE sip:bob@example.com SIP/2.0", "1 INVITE", stacktest.AudioSDP(a, "RTP/AVP", 0))
		invite = bytes.Replace(invite, []byte("CSeq: 1 INVITE\r\n"), []byte("CSeq: 1 INVITE\r\nSession-ID: "+sid+";remote=00000000000000000000000000000000\r\n"), 1)
		s.Send(sigOf(a), sigOf(b), invite)
		s.Send(sigOf(b), sigOf(a), stacktest.DialogMessage(callID, "SIP/2.0 200 OK", "1 INVITE", stacktest.AudioSDP(b, "RTP/AVP", 0)))
		s.Send(sigOf(a), sigOf(b), stacktest.DialogMessage(callID, "ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
		for n := range 20 {
			s.Send(a, b, stacktest.AudioPacket(0x1000+uint32(i), uint16(n), 0, 1))
		}
		genBye(s, callID, a, b)
	}
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, s.WriteFile("passive.pcap")))

	srs := e.startSRS("--listen", "tcp:127.0.0.1:15661", "--rtp-ports", "16950-16999")
	src := stacktest.NewSRC(t, "tcp:127.0.0.1:15661", nil)
	sock := stacktest.MediaSocket(t)
	// The SBC's view: the callee's UUID local, the caller's remote.
	meta := strings.Replace(siprecMeta, `<session session_id="s1"/>`,
		`<session session_id="s1"><sipSessionID>`+callee+`;remote=`+caller+`</sipSessionID></session>`, 1)
	ct, body := stacktest.SIPRECBody(stacktest.AudioSDP(sock.LocalAddr().(*net.UDPAddr).AddrPort(), "RTP/AVP", 0, "a=sendonly", "a=label:1"), meta)
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess == nil {
		t.Fatalf("INVITE: %v %v", err, res)
	}
	for n := range uint16(20) {
		if _, err := sock.WriteToUDPAddrPort(stacktest.AudioPacket(0x3000, n, 0, 2), sess.Ports()[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.D.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	srs.shutdown()
	e.processAndProject()
	byCall := map[string]search.Result{}
	for _, r := range e.find() {
		byCall[r.SIPCallID] = r
	}
	siprecCall, passive, other := byCall[sess.D.InviteRequest.CallID().Value()], byCall["passive-0@example.com"], byCall["passive-1@example.com"]
	if len(byCall) != 3 || fmt.Sprint(siprecCall.LinkedCalls) != fmt.Sprint([]string{passive.CallID}) ||
		fmt.Sprint(passive.LinkedCalls) != fmt.Sprint([]string{siprecCall.CallID}) || len(other.LinkedCalls) != 0 {
		t.Fatalf("links: SIPREC %v, passive %v, other %v (calls %v)", siprecCall.LinkedCalls, passive.LinkedCalls, other.LinkedCalls, byCall)
	}
	table := e.cmd("search", "--database", e.db)
	if !strings.Contains(table, "call "+siprecCall.CallID+" is also recorded as "+passive.CallID) {
		t.Fatalf("search does not say so:\n%s", table)
	}
}
