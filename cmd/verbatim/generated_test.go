package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"

	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/srtp/v2"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// Captures of traffic classes the sample captures lack, generated here and
// recorded as a user would: each stream must play, sample for sample at
// its RTP time, as tshark's export decoded by sox does, and the call's
// label must say so.

// sigOf is the SIP address of the host of a media address.
func sigOf(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr(), 5060) }

// genSetup writes a call's INVITE (offer), 200 OK (answer) and ACK between
// the hosts of caller and callee.
func genSetup(s *stacktest.Synth, callID string, caller, callee netip.AddrPort, offer, answer string) {
	s.Send(sigOf(caller), sigOf(callee), stacktest.DialogMessage(callID, "INVITE sip:bob@example.com SIP/2.0", "1 INVITE", offer))
	s.Send(sigOf(callee), sigOf(caller), stacktest.DialogMessage(callID, "SIP/2.0 200 OK", "1 INVITE", answer))
	s.Send(sigOf(caller), sigOf(callee), stacktest.DialogMessage(callID, "ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
}

// genBye writes the caller's BYE and its 200 OK.
func genBye(s *stacktest.Synth, callID string, caller, callee netip.AddrPort) {
	s.Send(sigOf(caller), sigOf(callee), stacktest.DialogMessage(callID, "BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
	s.Send(sigOf(callee), sigOf(caller), stacktest.DialogMessage(callID, "SIP/2.0 200 OK", "2 BYE", ""))
}

// genCall writes one call: its setup, then n packets each way (caller's
// payload type ptCaller, callee's ptCallee), then BYE and its 200 OK.
func genCall(s *stacktest.Synth, callID string, caller, callee netip.AddrPort, offer, answer string, ptCaller, ptCallee uint8, n int) {
	genSetup(s, callID, caller, callee, offer, answer)
	for i := range n {
		s.Send(caller, callee, stacktest.AudioPacket(0x1000, uint16(1000+i), ptCaller, 0x11))
		s.Send(callee, caller, stacktest.AudioPacket(0x2000, uint16(5000+i), ptCallee, 0x22))
	}
	genBye(s, callID, caller, callee)
}

// record ingests, processes and projects the captures in e.
func (e *cliEnv) record(captures ...string) {
	e.t.Helper()
	e.t.Log(e.cmd(append([]string{"ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring}, captures...)...))
	e.processAndProject()
}

// processAndProject records what is ingested and projects it, each run
// until its group has read every topic to its end.
func (e *cliEnv) processAndProject() {
	e.t.Helper()
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", e.t.TempDir(), "--exit-when-idle", "--quiet"))
	e.t.Log(e.cmd("project", "search", "--brokers", e.brokers, "--keyring", e.keyring, "--database", e.db, "--exit-when-idle"))
}

// TestStaticPayloadTypeTheAnswerOmits: SIPp's uac_pcap offers RTP/AVP 8
// 101 and sends PCMA; SIPp's uas answers RTP/AVP 0. PCMA is a static
// payload type (RFC 3551) and the sender's own offer declares it: the
// caller's audio is decoded by its offer, the callee's by its answer.
// Before, every caller packet was captured and none was in the recording,
// and the call read "complete".
func TestStaticPayloadTypeTheAnswerOmits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "static_pt")
	caller, callee := netip.MustParseAddrPort("192.0.2.10:6004"), netip.MustParseAddrPort("192.0.2.20:6000")
	s := stacktest.NewSynth(t, 10*time.Millisecond)
	offer := stacktest.AudioSDP(caller, "RTP/AVP", 8, "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000")
	offer = strings.Replace(offer, "RTP/AVP 8\r\n", "RTP/AVP 8 101\r\n", 1)
	answer := stacktest.AudioSDP(callee, "RTP/AVP", 0, "a=rtpmap:0 PCMU/8000")
	genCall(s, "static-pt@example.com", caller, callee, offer, answer, 8, 0, 100)
	capture := s.WriteFile("static-pt.pcap")
	e.record(capture)
	r := e.assertPlays(capture, "static-pt@example.com", []streamRef{{0x1000, 8, "al"}, {0x2000, 0, "ul"}})
	if c := r.Recording.Completeness; c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded != 200 {
		t.Fatalf("completeness %+v, ledgers %+v", c, r.Recording.Ledgers)
	}
	if table := e.cmd("search", "--database", e.db, "--call-id", "static-pt@example.com"); !strings.Contains(table, "complete, 200 audio packets") {
		t.Fatalf("search:\n%s", table)
	}
}

// TestConcurrentCallsShareAMediaEndpoint: SIPp's uas answers every call
// with the same media address; the callers send from their own ports and
// the calls overlap. Each call's recording holds its own caller's audio,
// and nothing of the other's (a later call took over the shared address
// before, and the first call recorded 34 of its 246 packets).
func TestConcurrentCallsShareAMediaEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "shared_ep")
	uas := netip.MustParseAddrPort("192.0.2.20:6000")
	callers := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:6004"), netip.MustParseAddrPort("192.0.2.10:6008")}
	s := stacktest.NewSynth(t, 5*time.Millisecond)
	ids := []string{"shared-1@example.com", "shared-2@example.com"}
	answer := stacktest.AudioSDP(uas, "RTP/AVP", 0, "a=rtpmap:0 PCMU/8000")
	// Call 1 starts; call 2 starts while call 1 sends; both send at once;
	// call 1 ends while call 2 goes on.
	setup := func(i int) {
		genSetup(s, ids[i], callers[i], uas, stacktest.AudioSDP(callers[i], "RTP/AVP", 0, "a=rtpmap:0 PCMU/8000"), answer)
	}
	bye := func(i int) { genBye(s, ids[i], callers[i], uas) }
	ssrc := []uint32{0x1111, 0x2222}
	send := func(i, n int) {
		s.Send(callers[i], uas, stacktest.AudioPacket(ssrc[i], uint16(100*(i+1)+n), 0, byte(0x40*(i+1))))
	}
	setup(0)
	for n := range 20 {
		send(0, n)
	}
	setup(1)
	for n := 20; n < 60; n++ {
		send(0, n)
		send(1, n-20)
	}
	bye(0)
	for n := 40; n < 60; n++ {
		send(1, n)
	}
	bye(1)
	capture := s.WriteFile("shared-endpoint.pcap")
	e.record(capture)
	for i, id := range ids {
		r := e.assertPlays(capture, id, []streamRef{{ssrc[i], 0, "ul"}})
		if c := r.Recording.Completeness; c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded != 60 {
			t.Fatalf("%s: completeness %+v, ledgers %+v", id, c, r.Recording.Ledgers)
		}
	}
}

// TestSDESOfferWithSeveralSuites: MicroSIP offers four SDES suites, tags
// 1 to 4; Asterisk's answer accepts tag 3. The caller encrypts with the key
// of tag 3 (RFC 4568 5.1.2), not with the first one it listed; a re-INVITE
// later brings new keys both ways, which apply from then on. Both
// directions play as their plaintext does (tshark's export of a plaintext
// twin of the capture, decoded by sox). Before, the caller's direction
// failed authentication and the call read complete.
func TestSDESOfferWithSeveralSuites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "sdes_tags")
	caller, callee := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.20:50000")
	key := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	inline := func(k []byte) string { return "inline:" + base64.StdEncoding.EncodeToString(k) }
	keyA3, keyB, keyA2, keyB2 := key(0xA3, 30), key(0xB1, 30), key(0xA7, 30), key(0xB7, 30)
	offer := stacktest.AudioSDP(caller, "RTP/SAVP", 0, "a=rtpmap:0 PCMU/8000",
		"a=crypto:1 AES_256_CM_HMAC_SHA1_80 "+inline(key(0xA1, 46)),
		"a=crypto:2 AES_256_CM_HMAC_SHA1_32 "+inline(key(0xA2, 46)),
		"a=crypto:3 AES_CM_128_HMAC_SHA1_80 "+inline(keyA3),
		"a=crypto:4 AES_CM_128_HMAC_SHA1_32 "+inline(key(0xA4, 30)))
	answer := stacktest.AudioSDP(callee, "RTP/SAVP", 0, "a=rtpmap:0 PCMU/8000", "a=crypto:3 AES_CM_128_HMAC_SHA1_80 "+inline(keyB))
	reOffer := stacktest.AudioSDP(caller, "RTP/SAVP", 0, "a=rtpmap:0 PCMU/8000", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "+inline(keyA2))
	reAnswer := stacktest.AudioSDP(callee, "RTP/SAVP", 0, "a=rtpmap:0 PCMU/8000", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "+inline(keyB2))

	enc, plain := stacktest.NewSynth(t, 10*time.Millisecond), stacktest.NewSynth(t, 10*time.Millisecond)
	both := func(src, dst netip.AddrPort, sealed, clear []byte) {
		enc.Send(src, dst, sealed)
		plain.Send(src, dst, clear)
	}
	sip := func(src, dst netip.AddrPort, first, cseq, body string) {
		// Not in the twin: tshark would take its SDP's streams for SRTP.
		enc.Send(sigOf(src), sigOf(dst), stacktest.DialogMessage("sdes-tags@example.com", first, cseq, body))
	}
	srtpCtx := func(k []byte) *srtp.Context {
		c, err := srtp.CreateContext(k[:16], k[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	media := func(c *srtp.Context, src, dst netip.AddrPort, ssrc uint32, seq uint16, salt byte) {
		p := stacktest.AudioPacket(ssrc, seq, 0, salt)
		sealed, err := c.EncryptRTP(nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		both(src, dst, sealed, p)
	}
	sip(caller, callee, "INVITE sip:bob@example.com SIP/2.0", "1 INVITE", offer)
	sip(callee, caller, "SIP/2.0 200 OK", "1 INVITE", answer)
	sip(caller, callee, "ACK sip:bob@example.com SIP/2.0", "1 ACK", "")
	ca, cb := srtpCtx(keyA3), srtpCtx(keyB)
	for n := range uint16(50) {
		media(ca, caller, callee, 0x3333, 100+n, 0x31)
		media(cb, callee, caller, 0x4444, 900+n, 0x42)
	}
	// The re-INVITE: until its answer, both sides still send with the old
	// keys.
	sip(caller, callee, "INVITE sip:bob@example.com SIP/2.0", "3 INVITE", reOffer)
	for n := range uint16(5) {
		media(ca, caller, callee, 0x3333, 150+n, 0x31)
		media(cb, callee, caller, 0x4444, 950+n, 0x42)
	}
	sip(callee, caller, "SIP/2.0 200 OK", "3 INVITE", reAnswer)
	sip(caller, callee, "ACK sip:bob@example.com SIP/2.0", "3 ACK", "")
	ca, cb = srtpCtx(keyA2), srtpCtx(keyB2)
	for n := range uint16(45) {
		media(ca, caller, callee, 0x3333, 155+n, 0x31)
		media(cb, callee, caller, 0x4444, 955+n, 0x42)
	}
	sip(caller, callee, "BYE sip:bob@example.com SIP/2.0", "4 BYE", "")
	sip(callee, caller, "SIP/2.0 200 OK", "4 BYE", "")
	capture, twin := enc.WriteFile("sdes-tags.pcap"), plain.WriteFile("sdes-tags-plain.pcap")
	e.record(capture)
	r := e.assertPlays(twin, "sdes-tags@example.com", []streamRef{{0x3333, 0, "ul"}, {0x4444, 0, "ul"}})
	if c := r.Recording.Completeness; c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded != 200 {
		t.Fatalf("completeness %+v, ledgers %+v", c, r.Recording.Ledgers)
	}
}

// TestEncryptedMediaIsLabelled: SRTP found without SIP and without a key
// (the Marseillaise sample with no --srtp-key) is kept encrypted and
// labelled so, never decoded as noise and called complete; with the key
// it plays.
func TestEncryptedMediaIsLabelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "encrypted")
	e.record(stacktest.SharedTestdata(t, "srtp/marseillaise-srtp.pcap"))
	rs := e.find("--party", "rtp:10.1.1.1:10000")
	if len(rs) != 1 || rs[0].Recording == nil {
		t.Fatalf("calls %+v", rs)
	}
	c := rs[0].Recording.Completeness
	if c == nil || c.Status != schemas.StatusPartial || c.AudioRecorded != 0 || c.Missing["encrypted_no_keys"] != 11888 {
		t.Fatalf("completeness %+v, ledgers %+v", c, rs[0].Recording.Ledgers)
	}
	if table := e.cmd("search", "--database", e.db, "--party", "rtp:10.1.1.1:10000"); !strings.Contains(table, "partial: 0 of 11888 audio packets recorded (11888 encrypted no keys)") {
		t.Fatalf("search:\n%s", table)
	}
}

// TestDamagedCaptureIsNotComplete: a record in the middle of a capture
// claims 1 GB. Reading resynchronises at the next record, so the frames
// after it are recorded; ingest exits with an error (input was lost), and
// the call that was open then reads partial, saying so, never complete.
func TestDamagedCaptureIsNotComplete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "damaged")
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	off := 24
	for range 299 { // frame 300 is an RTP packet of call 1-1966
		off += 16 + int(binary.LittleEndian.Uint32(data[off+8:]))
	}
	bad := bytes.Clone(data)
	binary.LittleEndian.PutUint32(bad[off+8:], 1<<30)
	capture := filepath.Join(t.TempDir(), "damaged.pcap")
	if err := os.WriteFile(capture, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runOut(ctx, "ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, capture)
	if err == nil || !strings.Contains(out, "1 damaged stretches of the file") || !strings.Contains(out, "1073741824") {
		t.Fatalf("ingest of a damaged capture: err %v\n%s", err, out)
	}
	e.processAndProject()
	rs := e.find("--call-id", "1-1966@10.0.2.20")
	if len(rs) != 1 || rs[0].Recording == nil {
		t.Fatalf("calls %+v", rs)
	}
	c := rs[0].Recording.Completeness
	if c == nil || c.Status != schemas.StatusPartial || !strings.Contains(c.CaptureDamaged, "capture damaged after frame 299") ||
		c.AudioRecorded != 424 || c.Missing["never_captured"] != 1 {
		t.Fatalf("completeness %+v", c)
	}
	t.Logf("1-1966: %s", c)
}

// TestCompletenessReport: per party and day, the calls signalled and what
// became of each: complete (the G.711 calls), partial (SIP_DTMF2's relayed
// direction lost 2 packets), not answered (its declined call), missing
// (the SIP INFO capture's call has no media), and failed (a capture whose
// keys the processor's key manager does not have).
func TestCompletenessReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "report")
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"),
		stacktest.SharedTestdata(t, "pcap/wireshark_SIP_DTMF2.cap"), stacktest.SharedTestdata(t, "pcap/wireshark_DTMFsipinfo.pcap"))
	other := filepath.Join(t.TempDir(), "other-keyring.json")
	e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", other, stacktest.SharedTestdata(t, "pcap/sipp_g711a.pcap"))
	e.processAndProject()
	table := e.cmd("completeness", "--database", e.db, "--from", "2000-01-01", "--to", "2030-01-01")
	t.Log("\n" + table)
	var rows []search.PartyDay
	if err := json.Unmarshal([]byte(e.cmd("completeness", "--database", e.db, "--from", "2000-01-01", "--to", "2030-01-01", "--json")), &rows); err != nil {
		t.Fatal(err)
	}
	get := func(party, day string) search.PartyDay {
		t.Helper()
		for _, r := range rows {
			if r.Party == party && r.Day == day {
				return r
			}
		}
		t.Fatalf("no row for %s on %s in %+v", party, day, rows)
		return search.PartyDay{}
	}
	for _, c := range []struct {
		party, day                                          string
		signalled, complete, partial, failed, missing, decl int
	}{
		{"sipp", "2016-11-26", 2, 2, 0, 0, 0, 0},                             // the G.711 capture's caller: two complete calls
		{"2504", "2005-09-09", 2, 1, 0, 0, 0, 1},                             // SIP_DTMF2: 25672 complete, 5514 declined
		{"rtp:192.168.105.110:4374", "2005-09-09", 1, 0, 1, 0, 0, 0},         // its relayed direction: 2 packets never captured
		{"admind", "2011-04-27", 1, 0, 0, 0, 1, 0},                           // SIP INFO digits, no media: MISSING
		{"(unknown: identities unreadable)", "2002-07-26", 1, 0, 0, 1, 0, 0}, // keys the processor does not have
	} {
		r := get(c.party, c.day)
		if r.Signalled != c.signalled || r.Complete != c.complete || r.Partial != c.partial || r.Failed != c.failed ||
			r.Missing != c.missing || r.NotAnswered != c.decl {
			t.Errorf("%s on %s: %+v", c.party, c.day, r)
		}
	}
	if !strings.Contains(table, "calls not completely recorded") {
		t.Fatalf("table:\n%s", table)
	}
	if _, err := runOut(ctx, "completeness", "--database", e.db, "--from", "2000-01-01", "--to", "2030-01-01", "--check"); err == nil {
		t.Fatal("--check passed with calls not completely recorded")
	}
}

// TestSprayOfRandomSSRCsCostsOneCounter: 2,000 packets of random SSRCs
// sprayed onto a live call's media port cost one counter, not a segment
// (and a batch, and a report entry) each: the call's own audio plays
// sample for sample, its ledger counts the spray as stray, and the call
// is complete. (Before, such a spray made a 1.7 MB completeness report
// that Kafka refused.)
func TestSprayOfRandomSSRCsCostsOneCounter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "spray")
	caller, callee := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.20:50000")
	attacker := netip.MustParseAddrPort("203.0.113.9:7777")
	s := stacktest.NewSynth(t, time.Millisecond)
	offer := stacktest.AudioSDP(caller, "RTP/AVP", 0, "a=rtpmap:0 PCMU/8000")
	answer := stacktest.AudioSDP(callee, "RTP/AVP", 0, "a=rtpmap:0 PCMU/8000")
	genSetup(s, "spray@example.com", caller, callee, offer, answer)
	for n := range 100 {
		s.Send(caller, callee, stacktest.AudioPacket(0x5555, uint16(300+n), 0, 0x55))
		for k := range 20 {
			x := uint32(n*20+k)*2654435761 + 12345 // a different SSRC and sequence number each
			s.Send(attacker, callee, stacktest.AudioPacket(x, uint16(x>>7), 0, byte(x)))
		}
	}
	genBye(s, "spray@example.com", caller, callee)
	capture := s.WriteFile("spray.pcap")
	out := e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, capture)
	if !strings.Contains(out, "2000 RTP packets of sources that never sent two in a row") {
		t.Fatalf("ingest:\n%s", out)
	}
	e.processAndProject()
	r := e.assertPlays(capture, "spray@example.com", []streamRef{{0x5555, 0, "ul"}})
	c := r.Recording.Completeness
	var stray uint64
	for _, l := range r.Recording.Ledgers {
		stray += l.Stray
		if len(l.SSRCs) > 16 {
			t.Fatalf("ledger names %d sources", len(l.SSRCs))
		}
	}
	if c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded != 100 || stray != 2000 {
		t.Fatalf("completeness %+v, %d stray, ledgers %+v", c, stray, r.Recording.Ledgers)
	}
}

// TestOpusIsInTheRecording: the Opus call's audio is decoded into the
// recording (pion/opus), at its RTP time, and kept as it came in an Ogg
// Opus object of its own. The reference is ffmpeg's decode of that Ogg
// object, whose packets are checked to be tshark's export of the RTP
// payloads, byte for byte; decoders differ in their last bits, so the
// recording must match it to within a signal-to-noise ratio, not sample
// for sample.
func TestOpusIsInTheRecording(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "opus")
	capture := stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-opus.pcap")
	e.record(capture)
	rs := e.find("--call-id", "1-4237@10.0.2.20")
	if len(rs) != 1 || rs[0].Recording == nil {
		t.Fatalf("calls %+v", rs)
	}
	if c := rs[0].Recording.Completeness; c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded != 425 {
		t.Fatalf("completeness %+v, ledgers %+v", c, rs[0].Recording.Ledgers)
	}
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	e.cmd("play", rs[0].CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	ref := e.oggReference(capture, rs[0].CallID, "callee-audio", 0x043eee04)
	if ref == nil {
		t.Fatal("the call keeps no Ogg Opus object of its callee's stream")
	}
	wav, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	left, right := wavChannels(t, wav)
	if !silent(left) {
		t.Fatal("the caller sent nothing, but its channel has sound")
	}
	best, bestAt, off := snrMatch(right, ref)
	t.Logf("callee channel against ffmpeg's decode of the Ogg object: %.1f dB SNR over %d samples from sample %d (%.1f dB one frame later)",
		best, len(ref), bestAt, off)
	if !snrMatches(best, off) || bestAt > 16000/50 {
		t.Fatalf("the callee's channel is %.1f dB from ffmpeg's decode at sample %d (%.1f dB a frame later): not the call's audio at its time", best, bestAt, off)
	}
}

// snrMatch finds where ref best fits in ch (16 kHz), starting from where
// each first has sound: the signal-to-noise ratio there, the offset, and
// the ratio one 20 ms frame later.
func snrMatch(ch, ref []int16) (best float64, bestAt int, off float64) {
	firstSound := func(s []int16) int {
		for i, v := range s {
			if v > 64 || v < -64 {
				return i
			}
		}
		return -1
	}
	snrAt := func(at int) float64 {
		var sig, noise float64
		for i, v := range ref {
			var got float64
			if j := at + i; j >= 0 && j < len(ch) {
				got = float64(ch[j])
			}
			diff := got - float64(v)
			sig, noise = sig+float64(v)*float64(v), noise+diff*diff
		}
		return 10 * math.Log10(sig/max(noise, 1))
	}
	base := firstSound(ch) - firstSound(ref)
	best = -1000
	for d := -480; d <= 480; d++ {
		if snr := snrAt(base + d); snr > best {
			best, bestAt = snr, base+d
		}
	}
	return best, bestAt, snrAt(bestAt + 320)
}

// snrMatches says whether a match found by snrMatch is the same audio: two
// decoders of one Opus stream agree to 28 dB here (pion/opus into the
// recording, ffmpeg for the reference), the same audio a frame off is
// below 0 dB.
func snrMatches(best, off float64) bool { return best >= 20 && off <= 10 }
