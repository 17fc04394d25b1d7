package sipdialog_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// track feeds every SIP packet (UDP port 5060) of a capture to a Tracker.
func track(t *testing.T, name string) (*sipdialog.Tracker, []sipdialog.EventKind) {
	t.Helper()
	data, err := os.ReadFile(stacktest.SharedTestdata(t, name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapread.Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []sipdialog.EventKind
	tr := sipdialog.NewTracker(func(e sipdialog.Event) { kinds = append(kinds, e.Kind) })
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Proto == pcapread.UDP && (p.Src.Port() == 5060 || p.Dst.Port() == 5060) {
			if err := tr.Handle(p.Time, p.Src, p.Payload); err != nil {
				t.Errorf("frame %d: %v", p.Frame, err)
			}
		}
	}
	return tr, kinds
}

func TestG711Dialogs(t *testing.T) {
	tr, kinds := track(t, "pcap/wireshark_sip-rtp-g711.pcap")
	if len(tr.Calls()) != 2 {
		t.Fatalf("%d calls, want 2", len(tr.Calls()))
	}
	c, ok := tr.Call("1-1966@10.0.2.20")
	if !ok {
		t.Fatal("call 1-1966@10.0.2.20 not found")
	}
	if c.State != sipdialog.StateEnded || c.EndReason != sipdialog.EndBye {
		t.Fatalf("1-1966: state %v reason %v, want ended by BYE", c.State, c.EndReason)
	}
	if d := c.Duration(); d < 8*time.Second || d > 9*time.Second {
		t.Fatalf("1-1966 duration %v, want about 8.5 s", d)
	}
	if len(c.Caller.Media) != 1 || c.Caller.Media[0].Addr != netip.MustParseAddrPort("10.0.2.20:6000") {
		t.Fatalf("caller media %+v, want 10.0.2.20:6000", c.Caller.Media)
	}
	// SIPp offers PCMU recvonly; FreeSWITCH answers PCMU and
	// telephone-event/101, sendonly, from its port 27942.
	if cs := c.Caller.Media[0].Codecs; len(cs) != 1 || cs[0].Name != "PCMU" || c.Caller.Media[0].Direction != "recvonly" {
		t.Fatalf("caller media %+v", c.Caller.Media[0])
	}
	if m := c.Callee.Media; len(m) != 1 || m[0].Addr != netip.MustParseAddrPort("10.0.2.15:27942") || len(m[0].Codecs) != 2 ||
		m[0].Codecs[1].Name != "telephone-event" || m[0].Codecs[1].PayloadType != 101 || m[0].Direction != "sendonly" {
		t.Fatalf("callee media %+v", m)
	}
	if c.Caller.Tag == "" || c.Callee.Tag == "" || c.Caller.URI == "" {
		t.Fatalf("parties %+v / %+v", c.Caller, c.Callee)
	}

	c2, ok := tr.Call("1-1968@10.0.2.20")
	if !ok || c2.State != sipdialog.StateEstablished {
		t.Fatalf("1-1968: %+v, want established with no BYE", c2)
	}
	if c2.Caller.Media[0].Codecs[0].Name != "PCMA" {
		t.Fatalf("1-1968 codecs %+v", c2.Caller.Media[0].Codecs)
	}
	want := []sipdialog.EventKind{sipdialog.EventStarted, sipdialog.EventAnswered, sipdialog.EventEnded,
		sipdialog.EventStarted, sipdialog.EventAnswered}
	if len(kinds) != len(want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("events %v, want %v", kinds, want)
		}
	}
	// Forgetting drops only calls that ended before the cut-off; a late
	// BYE for a forgotten call is ignored, not taken for a new call.
	if n := tr.Forget(c.EndedAt); n != 0 {
		t.Fatalf("Forget at the end time dropped %d calls", n)
	}
	if n := tr.Forget(c.EndedAt.Add(time.Nanosecond)); n != 1 {
		t.Fatalf("Forget dropped %d calls, want 1", n)
	}
	if _, ok := tr.Call("1-1966@10.0.2.20"); ok {
		t.Fatal("forgotten call still tracked")
	}
	open := 0
	tr.EachOpen(func(*sipdialog.Call) { open++ })
	if open != 1 {
		t.Fatalf("%d open calls, want 1", open)
	}
	ignored := tr.Stats().Ignored
	bye := "BYE sip:test@10.0.2.15 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.2.20;branch=z9hG4bKx\r\nFrom: <sip:sipp@10.0.2.20>;tag=a\r\n" +
		"To: <sip:test@10.0.2.15>;tag=b\r\nCall-ID: 1-1966@10.0.2.20\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
	if err := tr.Handle(c.EndedAt.Add(time.Second), netip.MustParseAddrPort("10.0.2.20:5060"), []byte(bye)); err != nil {
		t.Fatal(err)
	}
	if tr.Stats().Ignored != ignored+1 || len(tr.Calls()) != 1 {
		t.Fatalf("late BYE: ignored %d -> %d, calls %d", ignored, tr.Stats().Ignored, len(tr.Calls()))
	}

	// Closing the capture ends the open call.
	tr.End(c2, c2.LastActivity, sipdialog.EndCaptureEnded)
	if c2.State != sipdialog.StateEnded || c2.EndReason != sipdialog.EndCaptureEnded {
		t.Fatalf("End: %+v", c2)
	}
}

func TestDeclinedAndProxiedCall(t *testing.T) {
	tr, _ := track(t, "pcap/wireshark_SIP_DTMF2.cap")
	declined, ok := tr.Call("5514@192.168.105.110")
	if !ok || declined.EndReason != sipdialog.EndRejected || declined.FinalStatus != 603 {
		t.Fatalf("5514: %+v, want rejected with 603", declined)
	}
	up, ok := tr.Call("25672@192.168.105.110")
	if !ok || up.State != sipdialog.StateEstablished {
		t.Fatalf("25672: %+v, want established", up)
	}
	if len(up.Caller.Media) == 0 || len(up.Callee.Media) == 0 {
		t.Fatalf("25672 media caller %+v callee %+v", up.Caller.Media, up.Callee.Media)
	}
	var te bool
	for _, c := range up.Caller.Media[0].Codecs {
		te = te || (c.Name == "telephone-event" && c.PayloadType == 96)
	}
	if !te {
		t.Fatalf("telephone-event on PT 96 not learned: %+v", up.Caller.Media[0].Codecs)
	}
	if len(tr.Calls()) != 2 || tr.Stats().Ignored < 3 {
		t.Fatalf("calls %d, stats %+v: REGISTERs must not become calls", len(tr.Calls()), tr.Stats())
	}
}

// The ZRTP sample's call is challenged (401) and re-sent with credentials;
// a CRLF keep-alive on port 5060 is not a malformed message.
func TestAuthChallengeAndKeepAlive(t *testing.T) {
	tr, _ := track(t, "pcap/wireshark_Asterisk_ZFONE_XLITE.pcap")
	c, ok := tr.Call("ZDYzOWVlNjEwM2NjZTBjNzliNmM1ZTNiOGZjNWFhN2E.")
	if !ok || c.EndReason != sipdialog.EndBye || c.AnsweredAt.IsZero() {
		t.Fatalf("ZRTP call: %+v, want answered after the 401 and ended by BYE", c)
	}
	if st := tr.Stats(); st.Malformed != 0 || st.KeepAlives == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMalformedMessage(t *testing.T) {
	tr := sipdialog.NewTracker(func(sipdialog.Event) {})
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	for _, bad := range []string{
		"\x00\x01garbage",
		"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n",
	} {
		if err := tr.Handle(time.Now(), src, []byte(bad)); !errors.Is(err, sipdialog.ErrMalformed) {
			t.Fatalf("Handle(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	good := "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: ok-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	if err := tr.Handle(time.Now(), src, []byte(good)); err != nil {
		t.Fatal(err)
	}
	if st := tr.Stats(); st.Malformed != 2 || len(tr.Calls()) != 1 {
		t.Fatalf("stats %+v, calls %d", st, len(tr.Calls()))
	}
}

func FuzzHandle(f *testing.F) {
	f.Add([]byte("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: ok-1\r\nCSeq: 1 INVITE\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: 66\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := sipdialog.NewTracker(func(sipdialog.Event) {})
		_ = tr.Handle(time.Unix(0, 0), netip.MustParseAddrPort("192.0.2.1:5060"), b)
	})
}
