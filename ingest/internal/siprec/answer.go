package siprec

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
)

// recordable are the encodings an SRS answer may choose, in order of
// preference when the offer leaves a choice: the codecs Verbatim records.
var recordable = []string{"PCMU", "PCMA", "G722", "opus", "G729", "L16"} //nolint:gochecknoglobals // a constant list

// Answer builds an SRS's SDP answer to an SRC's offer (RFC 7866 8.1.1,
// RFC 3264): one m-line per offered one, in order. Each audio line is
// answered on the next of ports, receive-only, with the offer's a=label and
// the first payload type the SRC offered that Verbatim records (and
// telephone-event, if offered); any other line, or an audio line with no
// codec Verbatim records, is refused with port 0. It needs a port for
// every audio line. crypto, if given, are the SRS's SDES answers of the
// audio lines (in the order of ports): one a=crypto each, for SRTP. A line
// the SRC offers inactive (a pause, RFC 7866 7.1.1) is answered inactive.
func Answer(offer []sipdialog.Media, addr netip.Addr, ports []uint16, version uint64, crypto ...[]sipdialog.Crypto) ([]byte, error) {
	if !addr.IsValid() {
		return nil, fmt.Errorf("siprec: answer: no address")
	}
	ipv := "IP4"
	if addr.Is6() {
		ipv = "IP6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=verbatim %d %d IN %s %s\r\ns=Verbatim SRS\r\nc=IN %s %s\r\nt=0 0\r\n", version, version, ipv, addr, ipv, addr)
	next := 0
	for i, m := range offer {
		transport := m.Transport
		if transport == "" {
			transport = "RTP/AVP"
		}
		codec, event := choose(m)
		if m.Kind != "audio" || codec == nil {
			pt := "0"
			if len(m.Codecs) > 0 {
				pt = fmt.Sprint(m.Codecs[0].PayloadType)
			}
			fmt.Fprintf(&b, "m=%s 0 %s %s\r\n", cmpOr(m.Kind, "audio"), transport, pt)
			continue
		}
		if next >= len(ports) {
			return nil, fmt.Errorf("siprec: answer: no port left for m-line %d", i+1)
		}
		pts := fmt.Sprint(codec.PayloadType)
		if event != nil {
			pts += fmt.Sprintf(" %d", event.PayloadType)
		}
		fmt.Fprintf(&b, "m=audio %d %s %s\r\n", ports[next], transport, pts)
		var keys []sipdialog.Crypto
		if next < len(crypto) {
			keys = crypto[next]
		}
		next++
		fmt.Fprintf(&b, "a=rtpmap:%d %s/%d", codec.PayloadType, codec.Name, codec.ClockRate)
		if codec.Channels > 1 {
			fmt.Fprintf(&b, "/%d", codec.Channels)
		}
		b.WriteString("\r\n")
		if codec.Fmtp != "" {
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", codec.PayloadType, codec.Fmtp)
		}
		if event != nil {
			fmt.Fprintf(&b, "a=rtpmap:%d telephone-event/%d\r\n", event.PayloadType, event.ClockRate)
		}
		for _, k := range keys {
			fmt.Fprintf(&b, "a=crypto:%d %s inline:%s\r\n", k.Tag, k.Suite, base64.StdEncoding.EncodeToString(k.Key))
		}
		if m.Direction == "inactive" {
			b.WriteString("a=inactive\r\n")
		} else {
			b.WriteString("a=recvonly\r\n")
		}
		if m.Label != "" {
			fmt.Fprintf(&b, "a=label:%s\r\n", m.Label)
		}
	}
	return []byte(b.String()), nil
}

// Recordable reports whether an offered line is audio with a codec
// Verbatim records: the lines Answer gives a port.
func Recordable(m sipdialog.Media) bool {
	codec, _ := choose(m)
	return m.Kind == "audio" && codec != nil
}

// choose returns the codec to answer an audio line with, and its
// telephone-event if offered: the first the offer lists that Verbatim
// records (the offerer's preference, RFC 3264 6.1).
func choose(m sipdialog.Media) (codec, event *sipdialog.Codec) {
	for i := range m.Codecs {
		c := &m.Codecs[i]
		switch {
		case strings.EqualFold(c.Name, "telephone-event"):
			if event == nil {
				event = c
			}
		case codec == nil && slices.ContainsFunc(recordable, func(n string) bool { return strings.EqualFold(n, c.Name) }):
			codec = c
		}
	}
	return codec, event
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Party is a participant of a SIPREC session as a recording shows it: its
// identity from the metadata, and the labels of the streams it sends.
type Party struct {
	ParticipantID string
	AoR, Name     string
	Sends         []string // a=label values
}

// Parties returns the metadata's participants with the labels of the
// offer's streams each one sends (participantstreamassoc), in the order the
// metadata lists them. When the metadata says of no stream who sends it
// (SRCs that send empty associations, or none), the labelled streams are
// given to the participants in order, the first stream to the first
// participant, as those SRCs list them, and inferred is true. An offered
// stream nobody sends after that is returned in unsent.
func (m *Metadata) Parties(offer []sipdialog.Media) (parties []Party, unsent []string, inferred bool) {
	parties, unsent = m.declaredParties(offer)
	declared := slices.ContainsFunc(parties, func(p Party) bool { return len(p.Sends) > 0 })
	if declared || len(parties) == 0 {
		return parties, unsent, false
	}
	for i, label := range unsent {
		if i < len(parties) {
			parties[i].Sends = append(parties[i].Sends, label)
		}
	}
	if len(unsent) > len(parties) {
		return parties, unsent[len(parties):], true
	}
	return parties, nil, true
}

func (m *Metadata) declaredParties(offer []sipdialog.Media) (parties []Party, unsent []string) {
	sentBy := map[string]bool{}
	for _, p := range m.Participants {
		party := Party{ParticipantID: p.ID}
		if len(p.Names) > 0 {
			party.AoR, party.Name = p.Names[0].AoR, p.Names[0].Name
		}
		for _, md := range offer {
			if md.Kind != "audio" || md.Label == "" {
				continue
			}
			s, ok := m.StreamByLabel(md.Label)
			if !ok {
				continue
			}
			if sender, ok := m.Sender(s.ID); ok && sender.ID == p.ID {
				party.Sends = append(party.Sends, md.Label)
				sentBy[md.Label] = true
			}
		}
		parties = append(parties, party)
	}
	for _, md := range offer {
		if md.Kind == "audio" && md.Label != "" && !sentBy[md.Label] {
			unsent = append(unsent, md.Label)
		}
	}
	return parties, unsent
}
