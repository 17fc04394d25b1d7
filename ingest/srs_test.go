package ingest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/ingest/internal/siprec"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// runSRS runs the SIPREC server with sc (its listener on a free port of
// 127.0.0.1 unless sc says) into a broker of its own, calls drive with the
// bound listeners, then stops the server and reads back what it produced.
func runSRS(t *testing.T, sc ingest.SRSConfig, drive func(ctx context.Context, listeners []string)) (ingest.Report, ingest.SRSStats, ingested, *keys.Keyring) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return runSRSOn(t, cluster.ListenAddrs(), sc, drive)
}

// runSRSOn is runSRS on brokers.
func runSRSOn(t *testing.T, brokers []string, sc ingest.SRSConfig, drive func(ctx context.Context, listeners []string)) (ingest.Report, ingest.SRSStats, ingested, *keys.Keyring) {
	t.Helper()
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Listen) == 0 {
		sc.Listen = []string{"udp:127.0.0.1:0"}
	}
	var st ingest.SRSStats
	rep, out := ingestRun(t, brokers, kr, "demo", func(ctx context.Context, cfg ingest.Config) (ingest.Report, error) {
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		ready := make(chan []string, 1)
		sc.Ready = func(ls []string) { ready <- ls }
		type result struct {
			rep ingest.Report
			st  ingest.SRSStats
			err error
		}
		done := make(chan result, 1)
		go func() {
			rep, st, err := ingest.SIPREC(sctx, cfg, sc)
			done <- result{rep, st, err}
		}()
		select {
		case ls := <-ready:
			drive(ctx, ls)
		case r := <-done:
			t.Fatalf("SRS stopped: %v", r.err)
		}
		stop()
		r := <-done
		st = r.st
		return r.rep, r.err
	})
	return rep, st, out, kr
}

// identities opens the sealed identities of a call's participants.
func identities(t *testing.T, kr *keys.Keyring, out ingested, cs *verbatimv1.CallStarted) []*verbatimv1.ParticipantIdentity {
	t.Helper()
	dk := out.dks[cs.GetDataKeyId()]
	plain, err := kr.UnwrapDataKey(context.Background(), "demo", keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New("demo", dk.GetKeyId(), plain)
	if err != nil {
		t.Fatal(err)
	}
	var ids []*verbatimv1.ParticipantIdentity
	for _, p := range cs.GetParticipants() {
		b, err := s.Open(nil, "verbatim.v1.ParticipantIdentity", p.GetIdentity())
		if err != nil {
			t.Fatal(err)
		}
		var id verbatimv1.ParticipantIdentity
		mustUnmarshal(t, b, &id)
		ids = append(ids, &id)
	}
	return ids
}

// realOffers are the multipart bodies of INVITEs from real SRCs.
var realOffers = []string{"drachtio_acme-siprec-offer.txt", "drachtio_broadworks-offer-2.txt", "drachtio_cisco-siprec-offer.txt", //nolint:gochecknoglobals // test data
	"drachtio_connectel-offer.txt", "drachtio_connectel-offer2.txt", "drachtio_connectel-offer3.txt",
	"drachtio_inactive-sdp-offer.txt", "drachtio_procomm-siprec-offer.txt", "drachtio_sonus-siprec-offer.txt"}

// offerBody reads a real SRC's body and the Content-Type it came with.
func offerBody(t *testing.T, name string) (string, []byte) {
	t.Helper()
	b, err := os.ReadFile(stacktest.SharedTestdata(t, "siprec/"+name))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "--") {
			return "multipart/mixed;boundary=" + strings.TrimPrefix(line, "--"), b
		}
	}
	t.Fatalf("%s: no boundary", name)
	return "", nil
}

// TestSRSAnswersRealSRCOffers: each INVITE body recorded from a real SRC
// (Acme, BroadWorks, Cisco, Connectel, Procomm, Sonus) is offered to the
// SRS over SIP; it answers 200 with one receive-only line per labelled
// stream on a port of its range, and records a call whose parties are the
// metadata's participants.
func TestSRSAnswersRealSRCOffers(t *testing.T) {
	type want struct {
		aors    []string
		streams int
	}
	wants := map[string]want{}
	_, st, out, kr := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18000, PortMax: 18199}, func(ctx context.Context, ls []string) {
		src := stacktest.NewSRC(t, ls[0], nil)
		for _, name := range realOffers {
			ct, body := offerBody(t, name)
			sess, res, err := src.Invite(ctx, ct, body)
			if err != nil || sess == nil {
				t.Fatalf("%s: %v %v", name, err, res)
			}
			parts, err := siprec.SplitBody(ct, body)
			if err != nil {
				t.Fatal(err)
			}
			md, err := siprec.ParseMetadata(parts.Metadata)
			if err != nil {
				t.Fatal(err)
			}
			var w want
			for _, p := range md.Participants {
				w.aors = append(w.aors, p.Names[0].AoR)
			}
			offer := strings.Count(string(parts.SDP), "m=audio")
			ports := sess.Ports()
			if len(ports) != offer {
				t.Fatalf("%s: %d answered lines for %d offered", name, len(ports), offer)
			}
			for i, m := range sess.Answer.MediaDescriptions {
				p := ports[i]
				if !p.IsValid() {
					continue
				}
				w.streams++
				if p.Port() < 18000 || p.Port() > 18199 || p.Addr() != netip.MustParseAddr("127.0.0.1") {
					t.Fatalf("%s: line %d answered at %v, outside the SRS's range", name, i, p)
				}
				label, _ := m.Attribute("label")
				_, recvonly := m.Attribute("recvonly")
				_, inactive := m.Attribute("inactive")
				if label == "" || !(recvonly || inactive) {
					t.Fatalf("%s: line %d %+v: want its label, receive-only or inactive", name, i, m.Attributes)
				}
			}
			if w.streams == 0 {
				t.Fatalf("%s: no stream answered", name)
			}
			wants[name] = w
			if err := sess.D.Bye(ctx); err != nil {
				t.Fatalf("%s: BYE: %v", name, err)
			}
		}
	})
	if st.Sessions != uint64(len(realOffers)) || len(out.started) != len(realOffers) || len(out.media) != len(realOffers) {
		t.Fatalf("%d sessions, %d calls started, %d ended; want %d (stats %+v)", st.Sessions, len(out.started), len(out.media), len(realOffers), st)
	}
	found := map[string]bool{}
	for _, cs := range out.started {
		if cs.GetSource() != verbatimv1.CaptureSource_CAPTURE_SOURCE_SIPREC {
			t.Fatalf("call %s: source %v", cs.GetCallId(), cs.GetSource())
		}
		var aors []string
		for _, id := range identities(t, kr, out, cs) {
			aors = append(aors, id.GetUri())
		}
		for name, w := range wants {
			if fmt.Sprint(aors) == fmt.Sprint(w.aors) && len(cs.GetStreams()) == w.streams {
				found[name] = true
			}
		}
		if out.ended[cs.GetCallId()].GetReason() != verbatimv1.EndReason_END_REASON_BYE {
			t.Fatalf("call %s ended %v", cs.GetCallId(), out.ended[cs.GetCallId()])
		}
	}
	for name, w := range wants {
		if !found[name] {
			t.Errorf("%s: no call with parties %v and %d streams", name, w.aors, w.streams)
		}
	}
	if w := wants["drachtio_cisco-siprec-offer.txt"]; len(w.aors) != 2 || !strings.HasPrefix(w.aors[0], "sip:7301@") || !strings.HasPrefix(w.aors[1], "sip:7300@") {
		t.Fatalf("Cisco CUBE's participants %v, want sip:7301@… and sip:7300@…", w.aors)
	}
}

// metadataDoc is an RFC 7865 document of one session, two participants
// and two streams labelled 1 and 2, with extra inside <recording>.
func metadataDoc(extra string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="s1"><sipSessionID>abc</sipSessionID></session>
  <participant participant_id="p1"><nameID aor="sip:alice@example.com"><name>Alice</name></nameID></participant>
  <participant participant_id="p2"><nameID aor="sip:+15551230000@example.com"/></participant>
  <stream stream_id="st1" session_id="s1"><label>1</label></stream>
  <stream stream_id="st2" session_id="s1"><label>2</label></stream>
  <participantstreamassoc participant_id="p1"><send>st1</send><recv>st2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p2"><send>st2</send><recv>st1</recv></participantstreamassoc>
` + extra + `</recording>
`
}

// offerSDP offers two PCMU streams labelled 1 and 2 from a and b.
func offerSDP(a, b netip.AddrPort) string {
	s := "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
	for i, p := range []netip.AddrPort{a, b} {
		s += fmt.Sprintf("m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:%d\r\n", p.Port(), i+1)
	}
	return s
}

// TestSRSRefusesHostileInput: oversized metadata, entity expansion, a
// stream id no stream has, a non-SIPREC INVITE, RTP from another address
// and an INVITE flood are refused with their codes and counted, while a
// session open meanwhile is recorded whole.
func TestSRSRefusesHostileInput(t *testing.T) {
	const packets = 100
	var sent [2]int
	rep, st, out, _ := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18200, PortMax: 18399, InviteRate: 1, InviteBurst: 10}, func(ctx context.Context, ls []string) {
		src := stacktest.NewSRC(t, ls[0], nil)
		good, socks := openSession(ctx, t, src)
		addr := func(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }
		ports := good.Ports()
		// A stranger on another loopback address sprays the good
		// session's ports (RTP Bleed): dropped, counted.
		stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Fatal(err)
		}
		defer stranger.Close()
		for seq := range uint16(packets) {
			for i, s := range socks {
				if _, err := s.WriteToUDPAddrPort(stacktest.AudioPacket(0x1000+uint32(i), seq, 0, byte(i)), ports[i]); err != nil {
					t.Fatal(err)
				}
				sent[i]++
				if seq%10 == 0 {
					_, _ = stranger.WriteToUDPAddrPort(stacktest.AudioPacket(0x6666, seq, 0, 9), ports[i])
				}
			}
			if seq == packets/2 {
				hostile(ctx, t, src, addr(socks[0]), addr(socks[1]))
			}
		}
		// Every packet sent is in the SRS's socket buffers now (loopback
		// delivers within the send): the SRS reads them before it ends the
		// session at the BYE.
		if err := good.D.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	})
	// The good session, and the flood's sessions the rate let through
	// (ended at once, without media): nothing of the refused INVITEs.
	if want := int(st.Sessions); len(out.started) != want || len(out.media) != want || want < 1 {
		t.Fatalf("%d calls started, %d ended, for %d sessions (stats %+v)", len(out.started), len(out.media), want, st)
	}
	withMedia := 0
	for _, me := range out.media {
		if len(me.GetMedia()) == 0 || me.GetMedia()[0].GetPackets() == 0 {
			continue
		}
		withMedia++
		for i, m := range me.GetMedia() {
			if m.GetPackets() != uint64(sent[i]) {
				t.Errorf("stream %s: %d packets recorded, %d sent", m.GetStreamId(), m.GetPackets(), sent[i])
			}
		}
		if me.GetCaptureDamaged() != "" {
			t.Errorf("capture damaged: %s", me.GetCaptureDamaged())
		}
	}
	if withMedia != 1 {
		t.Fatalf("%d calls with media, want the good session", withMedia)
	}
	if st.ForeignPackets != 2*packets/10 {
		t.Errorf("%d packets from the stranger counted, want %d", st.ForeignPackets, 2*packets/10)
	}
	for code, n := range map[int]uint64{400: 3, 488: 2, 413: 1} {
		if st.Refused[code] != n {
			t.Errorf("%d INVITEs refused %d, want %d (stats %+v)", st.Refused[code], code, n, st)
		}
	}
	if st.RateLimited == 0 || st.Refused[503] != st.RateLimited {
		t.Errorf("flood: %d rate limited, %d refused 503", st.RateLimited, st.Refused[503])
	}
	t.Logf("refused %v, %d rate limited, %d foreign packets; %d RTP packets recorded", st.Refused, st.RateLimited, st.ForeignPackets, rep.RTPPackets)
}

// hostile sends the bad INVITEs, each of which must be refused with its
// code: nothing of them is recorded.
func hostile(ctx context.Context, t *testing.T, src *stacktest.SRC, a, b netip.AddrPort) {
	t.Helper()
	sdpOffer := offerSDP(a, b)
	expect := func(what string, code int, ct string, body []byte) {
		t.Helper()
		sess, res, err := src.Invite(ctx, ct, body)
		if err != nil || sess != nil || res == nil || res.StatusCode != code {
			t.Fatalf("%s: %v %v, want %d", what, err, res, code)
		}
		if code == 503 {
			if res.GetHeader("Retry-After") == nil {
				t.Fatalf("%s: 503 without Retry-After", what)
			}
		} else if w := res.GetHeader("Warning"); w == nil || !strings.Contains(w.Value(), "399") {
			t.Fatalf("%s: %d without a Warning saying why", what, code)
		}
		t.Logf("%s: %d %s", what, res.StatusCode, res.GetHeader("Warning"))
	}
	big := metadataDoc("<extra>" + strings.Repeat("x", siprec.MaxMetadataBytes) + "</extra>")
	ct, body := stacktest.SIPRECBody(sdpOffer, big)
	expect("oversized metadata", 400, ct, body)
	bomb := `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>` +
		strings.TrimPrefix(metadataDoc("<x>&b;</x>"), `<?xml version="1.0" encoding="UTF-8"?>`)
	ct, body = stacktest.SIPRECBody(sdpOffer, bomb)
	expect("entity expansion", 400, ct, body)
	unknown := strings.Replace(metadataDoc(""), "<send>st2</send>", "<send>st9</send>", 1)
	ct, body = stacktest.SIPRECBody(sdpOffer, unknown)
	expect("unknown stream id", 400, ct, body)
	expect("body too large", 413, "multipart/mixed;boundary=x", bytes.Repeat([]byte("x"), 260<<10))
	gsm := strings.ReplaceAll(sdpOffer, "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 3\r\na=rtpmap:3 GSM/8000")
	ct, body = stacktest.SIPRECBody(gsm, metadataDoc(""))
	expect("no codec Verbatim records", 488, ct, body)
	plain := src.Plain()
	sess, res, err := plain.Invite(ctx, "application/sdp", []byte(sdpOffer))
	if err != nil || sess != nil || res.StatusCode != 488 {
		t.Fatalf("a plain INVITE: %v %v, want 488", err, res)
	}
	// A flood: more new sessions than the rate allows from one address.
	ct, body = stacktest.SIPRECBody(sdpOffer, metadataDoc(""))
	limited := 0
	for range 20 {
		sess, res, err := src.Invite(ctx, ct, body)
		switch {
		case err != nil:
			t.Fatal(err)
		case sess != nil:
			_ = sess.D.Bye(ctx)
		case res.StatusCode == 503 && res.GetHeader("Retry-After") != nil:
			limited++
		default:
			t.Fatalf("flood: %v", res)
		}
	}
	if limited == 0 {
		t.Fatal("an INVITE flood was not limited")
	}
}

// openSession opens a two-stream session from two media sockets.
func openSession(ctx context.Context, t *testing.T, src *stacktest.SRC) (*stacktest.SRCSession, [2]*net.UDPConn) {
	t.Helper()
	socks := [2]*net.UDPConn{stacktest.MediaSocket(t), stacktest.MediaSocket(t)}
	addr := func(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }
	ct, body := stacktest.SIPRECBody(offerSDP(addr(socks[0]), addr(socks[1])), metadataDoc(""))
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess == nil {
		t.Fatalf("session: %v %v", err, res)
	}
	return sess, socks
}

// goodSession opens a two-stream session, sends n packets on each and ends
// it; it returns the packets sent.
func goodSession(ctx context.Context, t *testing.T, src *stacktest.SRC, n int) (*stacktest.SRCSession, int) {
	t.Helper()
	sess, socks := openSession(ctx, t, src)
	return sess, sendAndBye(ctx, t, sess, socks, n)
}

// sendAndBye sends n packets on each stream of sess and ends it; it
// returns the packets sent.
func sendAndBye(ctx context.Context, t *testing.T, sess *stacktest.SRCSession, socks [2]*net.UDPConn, n int) int {
	t.Helper()
	ports := sess.Ports()
	sent := 0
	for seq := range uint16(n) {
		for i, s := range socks {
			if _, err := s.WriteToUDPAddrPort(stacktest.AudioPacket(0x2000+uint32(i), seq, 0, byte(i)), ports[i]); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	if err := sess.D.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	return sent
}

// downableBroker is a broker that, while down is set, stores nothing:
// every produce request fails (its connection is dropped), and the client
// retries, as it does while a real broker is away.
func downableBroker(t *testing.T) (*kfake.Cluster, *atomic.Bool) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	down := new(atomic.Bool)
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if down.Load() {
			return nil, errors.New("broker unavailable"), true
		}
		return nil, nil, false
	})
	return cluster, down
}

// TestSRSRefusesSessionsWhileKafkaIsDown: while the broker stores nothing
// (every produce request fails: down), a new session is refused with 503
// and Retry-After within the accept timeout (the SBC fails over, or blocks
// the call under a recording-required policy); once it stores again, new
// sessions are recorded.
func TestSRSRefusesSessionsWhileKafkaIsDown(t *testing.T) {
	cluster, down := downableBroker(t)
	brokers := cluster.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := kafkaclient.EnsureTopics(ctx, setup, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	setup.Close()
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""), kgo.RecordDeliveryTimeout(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ready := make(chan []string, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		st  ingest.SRSStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		_, st, err := ingest.SIPREC(sctx, ingest.Config{Tenant: "demo", Keys: kr, Producer: cl},
			ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18400, PortMax: 18499, AcceptTimeout: time.Second,
				RetryAfter: 1, Ready: func(ls []string) { ready <- ls }})
		done <- result{st, err}
	}()
	src := stacktest.NewSRC(t, (<-ready)[0], nil)
	_, first := goodSession(ctx, t, src, 10)

	down.Store(true)
	ct, body := stacktest.SIPRECBody(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")), metadataDoc(""))
	began := time.Now()
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess != nil || res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("with Kafka down: %v %v, want 503 with Retry-After", err, res)
	}
	t.Logf("with Kafka down: %d %s after %v, Retry-After %s", res.StatusCode, res.GetHeader("Warning").Value(), time.Since(began).Round(time.Millisecond), res.GetHeader("Retry-After").Value())

	down.Store(false)
	// Back: the SRS accepts again once Kafka stores its records (the
	// client reconnects with a backoff of its own). Each try is answered
	// (503 while Kafka does not store yet), so this loop ends on the SRS's
	// own answer; the session accepted is recorded whole.
	socks := [2]*net.UDPConn{stacktest.MediaSocket(t), stacktest.MediaSocket(t)}
	addr := func(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }
	ct, body = stacktest.SIPRECBody(offerSDP(addr(socks[0]), addr(socks[1])), metadataDoc(""))
	var sess2 *stacktest.SRCSession
	for tries := 0; sess2 == nil; tries++ {
		s, res, err := src.Invite(ctx, ct, body)
		switch {
		case err != nil:
			t.Fatal(err)
		case s != nil:
			sess2 = s
			t.Logf("accepted again after %d refusals", tries)
			continue
		case res.StatusCode != 503:
			t.Fatalf("after Kafka is back: %v", res)
		}
		select {
		case <-ctx.Done():
			t.Fatal("never accepted again")
		case <-time.After(200 * time.Millisecond):
		}
	}
	sent := sendAndBye(ctx, t, sess2, socks, 10)
	stop()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The broker holds both sessions, whole, and nothing of the refused
	// ones.
	cons, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""), kgo.ConsumeTopics(schemas.TopicMedia, schemas.TopicCalls),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var packets uint64
	started := 0
	stacktest.ReadBack(ctx, t, cons, func(rec *kgo.Record) {
		env, err := schemas.ParseHeaders(rec.Headers)
		if err != nil {
			t.Fatal(err)
		}
		switch env.Type {
		case "verbatim.v1.MediaEnded":
			var me verbatimv1.MediaEnded
			mustUnmarshal(t, rec.Value, &me)
			for _, m := range me.GetMedia() {
				packets += m.GetPackets()
			}
		case "verbatim.v1.CallStarted":
			started++
		}
	}, schemas.TopicMedia, schemas.TopicCalls)
	if packets != uint64(sent+first) || started != 2 {
		t.Fatalf("%d packets recorded of %d sent, %d calls started (want the two sessions); stats %+v", packets, sent+first, started, r.st)
	}
	if r.st.Refused[503] == 0 {
		t.Fatalf("no 503 counted: %+v", r.st)
	}
}

// TestSRSEndsSessionsPastTheMediaBuffer: while Kafka stores nothing, a
// running session's media waits, up to the buffer's bound; past it the SRS
// ends the session (BYE to the SRC) and its recording says why, so it is
// never silently truncated.
func TestSRSEndsSessionsPastTheMediaBuffer(t *testing.T) {
	cluster, down := downableBroker(t)
	var callID string
	var byes []string
	const bound = 64 << 10
	_, st, out, _ := runSRSOn(t, cluster.ListenAddrs(), ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18500, PortMax: 18599, MediaBuffer: bound,
		Linger: time.Millisecond},
		func(ctx context.Context, ls []string) {
			src := stacktest.NewSRC(t, ls[0], nil)
			sess, socks := openSession(ctx, t, src)
			callID = sess.D.InviteRequest.CallID().Value()
			down.Store(true)
			ports := sess.Ports()
			// Send until the SRS ends the session: the bound is some 64 KiB
			// of batches, a few thousand packets.
			for seq := uint16(0); ; seq++ {
				for i, s := range socks {
					_, _ = s.WriteToUDPAddrPort(stacktest.AudioPacket(0x3000+uint32(i), seq, 0, byte(i)), ports[i])
				}
				select {
				case id := <-src.Byes:
					byes = append(byes, id)
				case <-ctx.Done():
					t.Fatal("the SRS never ended the session")
				case <-time.After(50 * time.Microsecond): // paced: the socket buffers are not the bound
					continue
				}
				break
			}
			down.Store(false)
		})
	if len(byes) != 1 || byes[0] != callID || st.EndedByRecorder != 1 {
		t.Fatalf("BYEs from the SRS %v (session %s), ended by recorder %d", byes, callID, st.EndedByRecorder)
	}
	if len(out.media) != 1 {
		t.Fatalf("%d calls ended", len(out.media))
	}
	for id, me := range out.media {
		if !strings.Contains(me.GetCaptureDamaged(), "Kafka did not acknowledge") || out.ended[id].GetReason() != verbatimv1.EndReason_END_REASON_CAPTURE_ENDED {
			t.Fatalf("the recording does not say why it ended: damaged %q, end %v", me.GetCaptureDamaged(), out.ended[id])
		}
		var n uint64
		for _, m := range me.GetMedia() {
			n += m.GetPackets()
		}
		t.Logf("ended after %d packets: %s", n, me.GetCaptureDamaged())
	}
}

// TestSRSDigestAuthentication: with an account configured, a new session
// is challenged (401); the wrong password is refused, the right one
// recorded.
func TestSRSDigestAuthentication(t *testing.T) {
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		t.Fatal(err)
	}
	password := hex.EncodeToString(pw) // made at run time: no secret in the repository
	_, st, out, _ := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18600, PortMax: 18699,
		Digest: &ingest.DigestAuth{Realm: "verbatim", User: "sbc", Password: password}}, func(ctx context.Context, ls []string) {
		src := stacktest.NewSRC(t, ls[0], nil)
		ct, body := stacktest.SIPRECBody(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")), metadataDoc(""))
		sess, res, err := src.Invite(ctx, ct, body)
		if err != nil || sess != nil || res.StatusCode != 401 || res.GetHeader("WWW-Authenticate") == nil {
			t.Fatalf("no credentials: %v %v, want 401 with a challenge", err, res)
		}
		sess, res, err = src.InviteAs(ctx, "sbc", "wrong", ct, body)
		if err != nil || sess != nil || res.StatusCode != 401 {
			t.Fatalf("wrong password: %v %v, want 401", err, res)
		}
		sess, res, err = src.InviteAs(ctx, "sbc", password, ct, body)
		if err != nil || sess == nil {
			t.Fatalf("right password: %v %v", err, res)
		}
		if err := sess.D.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if st.Sessions != 1 || len(out.started) != 1 || st.Refused[401] == 0 {
		t.Fatalf("%d sessions, %d calls, refused %v: want the authenticated one alone", st.Sessions, len(out.started), st.Refused)
	}
}

// TestSRSSessionLifecycle: OPTIONS keep-alives, session timers (RFC 4028:
// an interval under 90 s refused with 422 and Min-SE, one above it agreed
// in the 200), a metadata update by UPDATE (a partial document naming a
// third participant), and a session the SRC abandons (neither SIP nor RTP
// for the idle timeout) ended by the SRS with a BYE.
func TestSRSSessionLifecycle(t *testing.T) {
	var abandoned string
	var reports atomic.Int64 // progress reports that saw the session
	_, st, out, kr := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18700, PortMax: 18799, IdleTimeout: time.Second,
		ProgressEvery: time.Second, Progress: func(st ingest.SRSStats) {
			if st.Sessions == 1 {
				reports.Add(1)
			}
		}},
		func(ctx context.Context, ls []string) {
			src := stacktest.NewSRC(t, ls[0], nil)
			ct, body := stacktest.SIPRECBody(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")), metadataDoc(""))
			_, res, err := src.Invite(ctx, ct, body, sip.NewHeader("Session-Expires", "30"), sip.NewHeader("Supported", "timer"))
			if err != nil || res.StatusCode != 422 || res.GetHeader("Min-SE") == nil {
				t.Fatalf("Session-Expires 30: %v %v, want 422 with Min-SE", err, res)
			}
			sess, res, err := src.Invite(ctx, ct, body, sip.NewHeader("Session-Expires", "120"), sip.NewHeader("Supported", "timer"))
			if err != nil || sess == nil {
				t.Fatalf("Session-Expires 120: %v %v", err, res)
			}
			if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "120;refresher=uac" {
				t.Fatalf("200 without the session interval: %v", res)
			}
			partial := `<?xml version="1.0"?><recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
  <participant participant_id="p3"><nameID aor="sip:supervisor@bank.example"><name>Supervisor</name></nameID></participant>
</recording>`
			up, err := sess.Update(ctx, "application/rs-metadata+xml", []byte(partial))
			if err != nil || up.StatusCode != 200 {
				t.Fatalf("UPDATE with metadata: %v %v", err, up)
			}
			// The session goes silent, and the SRS ends it.
			abandoned = sess.D.InviteRequest.CallID().Value()
			select {
			case id := <-src.Byes:
				if id != abandoned {
					t.Fatalf("BYE for %s, want %s", id, abandoned)
				}
			case <-ctx.Done():
				t.Fatal("the SRS never ended the idle session")
			}
		})
	if reports.Load() == 0 {
		t.Error("no progress report while the session was open")
	}
	if len(out.started) != 1 || st.EndedByRecorder != 1 || st.Refused[422] != 1 {
		t.Fatalf("%d calls, %d ended by the recorder, refused %v", len(out.started), st.EndedByRecorder, st.Refused)
	}
	for id := range out.started {
		if out.ended[id].GetReason() != verbatimv1.EndReason_END_REASON_TIMEOUT {
			t.Fatalf("ended %v, want a timeout", out.ended[id])
		}
	}
	// The UPDATE's participant is in the call's CallUpdated.
	found := false
	for _, r := range out.records {
		env, _ := schemas.ParseHeaders(r.Headers)
		if env.Type != "verbatim.v1.CallUpdated" {
			continue
		}
		var cu verbatimv1.CallUpdated
		mustUnmarshal(t, r.Value, &cu)
		cs := out.started[cu.GetCallId()]
		cs.Participants = cu.GetParticipants()
		for _, id := range identities(t, kr, out, cs) {
			found = found || (id.GetUri() == "sip:supervisor@bank.example" && cu.GetReason() == "metadata")
		}
	}
	if !found {
		t.Fatal("no CallUpdated (metadata) names the participant the UPDATE added")
	}
}

// TestSRSRecordsPlainCallsWhenAsked: with PlainCalls, an INVITE that is not
// a SIPREC session is recorded as a call of its From and To.
func TestSRSRecordsPlainCallsWhenAsked(t *testing.T) {
	_, _, out, kr := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18800, PortMax: 18899, PlainCalls: true},
		func(ctx context.Context, ls []string) {
			src := stacktest.NewSRC(t, ls[0], nil).Plain()
			sess, res, err := src.Invite(ctx, "application/sdp", []byte(stacktest.AudioSDP(netip.MustParseAddrPort("127.0.0.1:9"), "RTP/AVP", 0)))
			if err != nil || sess == nil {
				t.Fatalf("plain INVITE: %v %v", err, res)
			}
			if err := sess.D.Bye(ctx); err != nil {
				t.Fatal(err)
			}
		})
	if len(out.started) != 1 {
		t.Fatalf("%d calls", len(out.started))
	}
	for _, cs := range out.started {
		ids := identities(t, kr, out, cs)
		if len(ids) != 2 || !strings.HasPrefix(ids[1].GetUri(), "sip:srs@127.0.0.1") || cs.GetStreams()[0].GetParticipantId() != "caller" {
			t.Fatalf("parties %v, streams %v", ids, cs.GetStreams())
		}
	}
}

// TestSRSRefusesSessionsWhileTheKeyManagerIsDown: with Vault unreachable
// no data key can be made, and a new session is refused with 503 and
// Retry-After, never recorded without encryption.
func TestSRSRefusesSessionsWhileTheKeyManagerIsDown(t *testing.T) {
	cluster, _ := downableBroker(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	km, err := keys.NewVault(keys.VaultConfig{Address: "http://" + dead, Token: "not-a-token"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kafkaclient.New(kafkaclient.Config{Brokers: cluster.ListenAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() {
		_, _, err := ingest.SIPREC(sctx, ingest.Config{Tenant: "demo", Keys: km, Producer: cl},
			ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18900, PortMax: 18949, AcceptTimeout: 2 * time.Second,
				Ready: func(ls []string) { ready <- ls }})
		done <- err
	}()
	src := stacktest.NewSRC(t, (<-ready)[0], nil)
	ct, body := stacktest.SIPRECBody(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")), metadataDoc(""))
	sess, res, err := src.Invite(ctx, ct, body)
	if err != nil || sess != nil || res.StatusCode != 503 || res.GetHeader("Retry-After") == nil ||
		!strings.Contains(res.GetHeader("Warning").Value(), "key manager unavailable") {
		t.Fatalf("with Vault down: %v %v, want 503 with Retry-After", err, res)
	}
	t.Logf("%d %s", res.StatusCode, res.GetHeader("Warning").Value())
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSRSKeepsCodecsAReinviteDrops: a re-INVITE that changes a stream's
// codec (PCMU to PCMA) keeps the old one in the call's stream description:
// packets sent before it still need it to be decoded.
func TestSRSKeepsCodecsAReinviteDrops(t *testing.T) {
	_, _, out, _ := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 18950, PortMax: 18999}, func(ctx context.Context, ls []string) {
		src := stacktest.NewSRC(t, ls[0], nil)
		sess, _ := openSession(ctx, t, src)
		offer := strings.ReplaceAll(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")),
			"RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 8\r\na=rtpmap:8 PCMA/8000")
		ct, body := stacktest.SIPRECBody(offer, metadataDoc(""))
		if res, err := sess.Reinvite(ctx, ct, body); err != nil || !res.IsSuccess() {
			t.Fatalf("re-INVITE: %v %v", err, res)
		}
		if err := sess.D.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	})
	for _, me := range out.media {
		for _, st := range me.GetStreams() {
			var pts []uint32
			for _, c := range st.GetCodecs() {
				pts = append(pts, c.GetPayloadType())
			}
			if !slices.Contains(pts, 0) || !slices.Contains(pts, 8) {
				t.Fatalf("stream %s: payload types %v, want PCMA and the PCMU it replaced", st.GetStreamId(), pts)
			}
		}
	}
	if len(out.media) != 1 {
		t.Fatalf("%d calls", len(out.media))
	}
}

// TestSRSOversizeDatagramsMarkTheRecording: a datagram from the SRC too
// long to be kept whole is dropped, and the call's ledger says so: it can
// never read complete.
func TestSRSOversizeDatagramsMarkTheRecording(t *testing.T) {
	_, _, out, _ := runSRS(t, ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 19000, PortMax: 19049}, func(ctx context.Context, ls []string) {
		src := stacktest.NewSRC(t, ls[0], nil)
		sess, socks := openSession(ctx, t, src)
		ports := sess.Ports()
		for seq := range uint16(5) {
			if _, err := socks[0].WriteToUDPAddrPort(stacktest.AudioPacket(0x4000, seq, 0, 1), ports[0]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := socks[0].WriteToUDPAddrPort(append(stacktest.AudioPacket(0x4000, 5, 0, 1), make([]byte, 3000)...), ports[0]); err != nil {
			t.Fatal(err)
		}
		if err := sess.D.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	})
	for _, me := range out.media {
		if !strings.Contains(me.GetCaptureDamaged(), "1 datagrams from the SRC were longer than 2048 bytes") {
			t.Fatalf("capture damaged %q: the dropped datagram is not accounted for", me.GetCaptureDamaged())
		}
	}
	if len(out.media) != 1 {
		t.Fatalf("%d calls", len(out.media))
	}
}
