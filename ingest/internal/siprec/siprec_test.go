package siprec_test

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/ingest/internal/siprec"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(stacktest.SharedTestdata(t, "siprec/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC7865Examples: the RFC's examples parse to what Ng911Lib's unit
// tests publish for them.
func TestRFC7865Examples(t *testing.T) {
	m, err := siprec.ParseMetadata(read(t, "ng911lib_Rfc7865-8.1.xml"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2010, 12, 16, 23, 41, 7, 0, time.UTC)
	if m.DataMode != "complete" || len(m.Groups) != 1 || m.Groups[0].ID != "7+OTCyoxTmqmqyA/1weDAg==" || !m.Groups[0].AssociateTime.Equal(at) {
		t.Fatalf("group: %+v", m.Groups)
	}
	if len(m.Sessions) != 1 || m.Sessions[0].ID != "hVpd7YQgRW2nD22h7q60JQ==" || !strings.Contains(m.Sessions[0].SIPSessionIDs[0], "ab30317f1a784d") {
		t.Fatalf("sessions: %+v", m.Sessions)
	}
	bob, ok := m.Participant("srfBElmCRp2QB23b7Mpk0w==")
	if !ok || bob.Names[0] != (siprec.NameID{AoR: "sip:bob@biloxi.com", Name: "Bob", Lang: "it"}) {
		t.Fatalf("Bob: %+v", bob)
	}
	if paul, ok := m.Participant("zSfPoSvdSDCmU3A3TRDxAw=="); !ok || paul.Names[0].AoR != "sip:Paul@biloxi.com" {
		t.Fatalf("Paul: %+v", paul)
	}
	wantStreams := map[string]string{"96": "UAAMm5GRQKSCMVvLyl4rFw==", "97": "i1Pz3to5hGk8fuXl+PbwCw==", "98": "8zc6e0lYTlWIINA6GR+3ag==", "99": "EiXGlc+4TruqqoDaNE76ag=="}
	for label, id := range wantStreams {
		if s, ok := m.StreamByLabel(label); !ok || s.ID != id {
			t.Fatalf("stream labelled %s: %+v", label, s)
		}
	}
	if len(m.ParticipantSessions) != 2 || len(m.ParticipantStreams) != 2 {
		t.Fatalf("associations: %+v %+v", m.ParticipantSessions, m.ParticipantStreams)
	}
	for _, id := range []string{"i1Pz3to5hGk8fuXl+PbwCw==", "UAAMm5GRQKSCMVvLyl4rFw=="} {
		if p, ok := m.Sender(id); !ok || p.ID != bob.ID {
			t.Fatalf("sender of %s: %+v", id, p)
		}
	}
	if p, ok := m.Sender("8zc6e0lYTlWIINA6GR+3ag=="); !ok || p.ID != "zSfPoSvdSDCmU3A3TRDxAw==" {
		t.Fatalf("sender of 8zc6: %+v", p)
	}
	// Extension elements are kept, not dropped.
	if m.Extensions["call-center.supervisor"] != "sip:alice@atlanta.com" || m.Extensions["mydata.structure"] != "FOO!" {
		t.Fatalf("extensions %v", m.Extensions)
	}

	m, err = siprec.ParseMetadata(read(t, "ng911lib_Rfc7865-8.2.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if m.DataMode != "partial" || len(m.Participants) != 1 || len(m.ParticipantSessions) != 1 ||
		!m.ParticipantSessions[0].Associate.IsZero() || !m.ParticipantSessions[0].Disassociate.Equal(time.Date(2010, 12, 16, 23, 41, 7, 0, time.UTC)) {
		t.Fatalf("8.2: %+v", m)
	}
}

// TestOffersFromRealSRCs: the INVITE bodies of real SBCs and PBXs split
// into SDP and metadata; each SDP labels its two audio streams, each label
// names a stream of the metadata, and its sender is a participant with an
// address of record (drachtio's parser tests publish sdp1, sdp2, the
// caller's AoR and the session ids for these).
func TestOffersFromRealSRCs(t *testing.T) {
	for _, name := range []string{"drachtio_acme-siprec-offer.txt", "drachtio_broadworks-offer-2.txt", "drachtio_cisco-siprec-offer.txt",
		"drachtio_connectel-offer.txt", "drachtio_connectel-offer2.txt", "drachtio_connectel-offer3.txt",
		"drachtio_inactive-sdp-offer.txt", "drachtio_procomm-siprec-offer.txt", "drachtio_sonus-siprec-offer.txt"} {
		t.Run(name, func(t *testing.T) {
			b, err := siprec.SplitBody("", read(t, name))
			if err != nil {
				t.Fatal(err)
			}
			media, err := sipdialog.ParseSDP(b.SDP)
			if err != nil {
				t.Fatal(err)
			}
			m, err := siprec.ParseMetadata(b.Metadata)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Sessions) == 0 || m.Sessions[0].ID == "" {
				t.Fatalf("no session id: %+v", m.Sessions)
			}
			var audio int
			for _, md := range media {
				if md.Kind != "audio" {
					continue
				}
				audio++
				s, ok := m.StreamByLabel(md.Label)
				if !ok {
					if len(m.Streams) == 0 {
						continue // metadata that lists no streams (Procomm): the labels alone tie them
					}
					t.Fatalf("m-line label %q names no stream of the metadata %+v", md.Label, m.Streams)
				}
				if p, ok := m.Sender(s.ID); ok && (len(p.Names) == 0 || p.Names[0].AoR == "") {
					t.Fatalf("stream %s: sender %+v has no address of record", s.ID, p)
				}
			}
			if audio != 2 {
				t.Fatalf("%d audio m-lines, want the two legs", audio)
			}
			var aors []string
			for _, p := range m.Participants {
				for _, n := range p.Names {
					aors = append(aors, n.AoR)
				}
			}
			if len(aors) == 0 || aors[0] == "" {
				t.Fatalf("no participant address of record: %+v", m.Participants)
			}
			t.Logf("%d participants %v, %d streams, extensions %v", len(m.Participants), aors, len(m.Streams), m.Extensions)

			// The SRS's answer: each offered line in order, the audio ones
			// on the ports given, with their labels.
			ports := []uint16{40000, 40002, 40004, 40006}
			ans, err := siprec.Answer(media, netip.MustParseAddr("192.0.2.1"), ports, 1)
			if err != nil {
				t.Fatal(err)
			}
			back, err := sipdialog.ParseSDP(ans)
			if err != nil || len(back) != len(media) {
				t.Fatalf("answer %q: %v (%d lines for %d)", ans, err, len(back), len(media))
			}
			for i, a := range back {
				// An inactive offer (a paused session) is answered inactive
				// (RFC 3264 6.1), any other receive-only.
				want := "recvonly"
				if media[i].Direction == "inactive" {
					want = "inactive"
				}
				if a.Label != media[i].Label || a.Direction != want || a.Addr.Port() != ports[i] || len(a.Codecs) == 0 ||
					a.Codecs[0].PayloadType != media[i].Codecs[0].PayloadType {
					t.Fatalf("answer line %d %+v to offer %+v", i, a, media[i])
				}
			}
			// Every stream's sender, by label, when the metadata says.
			parties, unsent, inferred := m.Parties(media)
			if len(unsent) != 0 {
				t.Fatalf("streams %v have no sender; parties %+v", unsent, parties)
			}
			for _, p := range parties {
				if len(p.Sends) != 1 {
					t.Fatalf("party %+v does not send one stream", p)
				}
			}
			t.Logf("parties %+v (senders inferred from order: %v)", parties, inferred)
		})
	}
	// Not SIPREC offers: refused with the reason.
	if _, err := siprec.SplitBody("application/sdp", read(t, "drachtio_non-siprec-payload.txt")); !errors.Is(err, siprec.ErrNotSIPREC) {
		t.Fatalf("a plain SDP offer: %v", err)
	}
	// BroadWorks' older body: a recording-session part with a pre-RFC
	// document; split, then refused with what is wrong.
	b, err := siprec.SplitBody("", read(t, "drachtio_broadworks-offer.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := siprec.ParseMetadata(b.Metadata); !errors.Is(err, siprec.ErrBadMetadata) || !strings.Contains(err.Error(), "recording_metadata") {
		t.Fatalf("pre-RFC metadata: %v", err)
	}
}

// TestHostileMetadata: what an attacker sends is refused whole, with the
// reason, and costs a bounded amount.
func TestHostileMetadata(t *testing.T) {
	good := string(read(t, "ng911lib_Rfc7865-8.1.xml"))
	for _, c := range []struct {
		name, doc, want string
	}{
		{"entity expansion", `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>&b;</datamode></recording>`, "document type declaration"},
		{"external entity", `<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording><datamode>&x;</datamode></recording>`, "document type declaration"},
		{"undefined entity", `<recording><datamode>&x;</datamode></recording>`, "entity"},
		{"oversized", `<recording>` + strings.Repeat("<x>aaaa</x>", 8000) + `</recording>`, "more than"},
		{"not well-formed", `<recording><participant participant_id="a"></recording>`, "bad recording metadata"},
		{"another root", `<html/>`, "not <recording>"},
		{"unknown stream", strings.Replace(good, "<send>i1Pz3to5hGk8fuXl+PbwCw==</send>", "<send>nope</send>", 1), `stream "nope"`},
		{"unknown participant", strings.Replace(good, `<participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">`, `<participantstreamassoc participant_id="ghost">`, 1), `participant "ghost"`},
		{"bad time", strings.Replace(good, "2010-12-16T23:41:07Z", "yesterday", 1), "RFC 3339"},
		{"bad datamode", strings.Replace(good, "<datamode>complete</datamode>", "<datamode>most</datamode>", 1), "datamode"},
	} {
		_, err := siprec.ParseMetadata([]byte(c.doc))
		if !errors.Is(err, siprec.ErrBadMetadata) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	many := `<recording>` + strings.Repeat(`<participant participant_id="p"/>`, siprec.MaxItems+1) + `</recording>`
	if _, err := siprec.ParseMetadata([]byte(many)); !errors.Is(err, siprec.ErrBadMetadata) {
		t.Errorf("%d participants: %v", siprec.MaxItems+1, err)
	}
	if _, err := siprec.SplitBody("multipart/mixed;boundary=x", []byte(strings.Repeat("a", siprec.MaxBodyBytes+1))); err == nil {
		t.Error("an oversized body was split")
	}
}

func FuzzParseMetadata(f *testing.F) {
	for _, name := range []string{"ng911lib_Rfc7865-8.1.xml", "ng911lib_Rfc7865-8.2.xml"} {
		b, err := os.ReadFile(stacktest.SharedTestdata(f, "siprec/"+name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`<!DOCTYPE r [<!ENTITY a "a">]><recording/>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := siprec.ParseMetadata(b)
		if err != nil {
			if !errors.Is(err, siprec.ErrBadMetadata) {
				t.Fatalf("an error not wrapping ErrBadMetadata: %v", err)
			}
			return
		}
		if len(m.Extensions) > siprec.MaxExtensions || len(m.Participants) > siprec.MaxItems {
			t.Fatalf("bounds exceeded: %d extensions, %d participants", len(m.Extensions), len(m.Participants))
		}
	})
}

func FuzzSplitBody(f *testing.F) {
	for _, name := range []string{"drachtio_cisco-siprec-offer.txt", "drachtio_sonus-siprec-offer.txt"} {
		b, err := os.ReadFile(stacktest.SharedTestdata(f, "siprec/"+name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := siprec.SplitBody("", b)
		if err == nil && (body.SDP == nil || body.Metadata == nil) {
			t.Fatal("split without SDP or metadata and no error")
		}
	})
}

// TestLatch: media is taken only from the SRC's negotiated address, the
// first source from it is latched, and no later packet re-learns it.
func TestLatch(t *testing.T) {
	l := siprec.NewLatch(netip.MustParseAddrPort("192.0.2.7:30000"))
	attacker := netip.MustParseAddrPort("203.0.113.9:30000")
	if l.Accept(attacker) {
		t.Fatal("a packet from another host was accepted before the SRC's")
	}
	src := netip.MustParseAddrPort("192.0.2.7:41234") // behind NAT: another port
	if !l.Accept(src) || !l.Accept(src) {
		t.Fatal("the SRC's packets were refused")
	}
	for _, other := range []netip.AddrPort{attacker, netip.MustParseAddrPort("192.0.2.7:30000"), netip.MustParseAddrPort("[::ffff:203.0.113.9]:5")} {
		if l.Accept(other) {
			t.Fatalf("%v took over a latched stream", other)
		}
	}
	if got, ok := l.Source(); !ok || got != src || l.Strays != 4 {
		t.Fatalf("latched %v %v, %d strays", got, ok, l.Strays)
	}
	if !l.Accept(netip.MustParseAddrPort("[::ffff:192.0.2.7]:41234")) {
		t.Fatal("the SRC's source written as an IPv4-mapped address was refused")
	}
}
