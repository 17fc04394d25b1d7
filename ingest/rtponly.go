package ingest

import (
	"net/netip"
	"time"

	"github.com/pion/rtp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/ingest/internal/rtpbatch"
	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// rtpOnly finds RTP that no captured SIP dialog describes (a media-only
// mirror port, a capture started after the INVITE, SIPp's
// play_pcap_audio) and records it as calls of its own: one call per pair of
// endpoints, the first sender as "caller". A flow counts as RTP once
// confirmPackets packets in a row have version 2, one SSRC, an audio
// payload type and sequence numbers one apart, as Wireshark's RTP heuristic
// asks; until then its packets are held, so none is lost.
type rtpOnly struct {
	candidates map[flowKey]*candidate
	flows      map[flowKey]*stream
	calls      map[pairKey]*rtpCall
	hdr        rtp.Header
}

const (
	confirmPackets = 4
	maxCandidates  = 4096
)

type flowKey struct{ src, dst netip.AddrPort }

// pairKey is a flow's two endpoints in a fixed order.
type pairKey struct{ a, b netip.AddrPort }

func pairOf(src, dst netip.AddrPort) pairKey {
	if src.Compare(dst) > 0 {
		src, dst = dst, src
	}
	return pairKey{src, dst}
}

type candidate struct {
	ssrc    uint32
	seq     uint16
	pt      uint8
	packets []heldPacket
}

type heldPacket struct {
	at      time.Time
	payload []byte
}

type rtpCall struct {
	c           *call
	first, last time.Time
}

// audioPT reports whether pt can start an RTP stream: a static audio
// type (not comfort noise) or a dynamic one.
func audioPT(pt uint8) bool {
	_, static := sipdialog.StaticCodec(pt)
	return (static && pt != 13) || (pt >= 96 && pt <= 127)
}

// packet takes a UDP packet nothing else claimed and reports whether it is
// (or may become) RTP of an unsignalled call.
func (r *rtpOnly) packet(in *pcapIngest, p *pcapread.Packet) bool {
	k := flowKey{p.Src, p.Dst}
	if s := r.flows[k]; s != nil {
		in.media(s, p)
		if rc := r.calls[pairOf(p.Src, p.Dst)]; rc != nil {
			rc.last = p.Time
		}
		return true
	}
	if _, err := r.hdr.Unmarshal(p.Payload); err != nil || r.hdr.Version != 2 {
		r.drop(in, k)
		return false
	}
	c := r.candidates[k]
	if c != nil && (c.ssrc != r.hdr.SSRC || r.hdr.SequenceNumber != c.seq+1) {
		// Not one stream after all: what was held is given up (and
		// counted), and this packet may start a stream of its own.
		r.drop(in, k)
		c = nil
	}
	if c == nil {
		if !audioPT(r.hdr.PayloadType) || len(r.candidates) >= maxCandidates {
			return false
		}
		c = &candidate{ssrc: r.hdr.SSRC, pt: r.hdr.PayloadType}
		r.candidates[k] = c
	}
	c.seq = r.hdr.SequenceNumber
	c.packets = append(c.packets, heldPacket{p.Time, append([]byte(nil), p.Payload...)})
	if len(c.packets) < confirmPackets {
		return true
	}
	delete(r.candidates, k)
	s := r.natStream(in, k)
	if s == nil {
		s = r.confirm(in, k, c)
	} else {
		r.flows[k] = s
	}
	if s == nil {
		return true
	}
	for _, h := range c.packets {
		in.media(s, &pcapread.Packet{Time: h.at, Src: p.Src, Dst: p.Dst, Proto: pcapread.UDP, Payload: h.payload, Frame: p.Frame})
	}
	return true
}

// natStream finds the SIP call whose party sends flow k: its source is an
// address that party's SDP gave (symmetric RTP), though its destination
// is not (the other party is behind NAT, and its SDP names a private
// address). Both halves of that picture must hold: the flow goes to where
// the other party's packets come from (its NAT's address), and the
// stream it joins has had no packet yet, so one stream never gets two
// sources this way.
func (r *rtpOnly) natStream(in *pcapIngest, k flowKey) *stream {
	for _, c := range in.calls {
		if c.ended || c.dialog == nil {
			continue
		}
		for _, side := range []struct {
			sender string
			media  []sipdialog.Media
		}{{"caller", c.dialog.Caller.Media}, {"callee", c.dialog.Callee.Media}} {
			for i, m := range side.media {
				if m.Addr != k.src {
					continue
				}
				other := "callee"
				if side.sender == "callee" {
					other = "caller"
				}
				id, otherID := streamID(side.sender, i), streamID(other, i)
				var mine, theirs *stream
				for _, s := range c.streams {
					switch s.id {
					case id:
						mine = s
					case otherID:
						theirs = s
					}
				}
				if mine != nil && theirs != nil && theirs.from == k.dst && mine.sent.Packets == 0 && mine.batcher.Empty() {
					return mine
				}
			}
		}
	}
	return nil
}

// srtpTag returns the length of the authentication tag the held packets
// of a candidate carry, if they look like SRTP: for a codec of a fixed
// rate (G.711 and G.722 take one octet per RTP clock tick, G.729 ten per
// 80), every payload is longer than its timestamp step implies by the same
// 4, 10 or 16 octets (HMAC-SHA1-32, HMAC-SHA1-80, AES-GCM). 0 otherwise.
func (c *candidate) srtpTag() int {
	var perTick func(ticks int) int
	switch c.pt {
	case 0, 8, 9:
		perTick = func(t int) int { return t }
	case 18:
		perTick = func(t int) int { return t / 8 }
	default:
		return 0
	}
	tag := -1
	var h rtp.Header
	var prevTS uint32
	for i, p := range c.packets {
		n, err := h.Unmarshal(p.payload)
		if err != nil {
			return 0
		}
		if i > 0 {
			ticks := int(h.Timestamp - prevTS)
			extra := len(p.payload) - n - perTick(ticks)
			if ticks <= 0 || (tag >= 0 && extra != tag) || (extra != 4 && extra != 10 && extra != 16) {
				return 0
			}
			tag = extra
		}
		prevTS = h.Timestamp
	}
	return max(tag, 0)
}

// confirm makes flow k, whose first packets cand holds, a stream: of a new
// call, or the other direction of an existing one.
func (r *rtpOnly) confirm(in *pcapIngest, k flowKey, cand *candidate) *stream {
	pt, at := cand.pt, cand.packets[0].at
	pair := pairOf(k.src, k.dst)
	rc := r.calls[pair]
	if rc == nil {
		id := schemas.DerivedID(in.cfg.Tenant, "rtp", k.src.String(), k.dst.String(), at.UTC().Format(time.RFC3339Nano))
		c := in.newCall(id, at)
		if c == nil {
			return nil
		}
		c.conv = c.id
		rc = &rtpCall{c: c, first: at, last: at}
		r.calls[pair] = rc
		in.report.RTPOnlyCalls++
	}
	c := rc.c
	sender := "caller"
	if len(c.desc) > 0 {
		sender = "callee"
	}
	codec := &verbatimv1.Codec{PayloadType: uint32(pt)} // dynamic, unnamed: kept raw
	if sc, ok := sipdialog.StaticCodec(pt); ok {
		codec = &verbatimv1.Codec{PayloadType: uint32(pt), Name: sc.Name, ClockRate: sc.ClockRate, Channels: sc.Channels}
	}
	id := streamID(sender, 0)
	transport := "RTP/AVP"
	var dec *srtpdec.Decryptor
	for _, key := range in.cfg.SRTPKeys { // keys given out of band
		if key.Dst == k.dst || !key.Dst.IsValid() {
			if d, err := srtpdec.New(key.Suite, key.Key); err == nil {
				transport, dec = "RTP/SAVP", d
				break
			}
		}
	}
	decodable := codec.GetName() != ""
	if tag := cand.srtpTag(); dec == nil && tag > 0 {
		// SRTP whose keys were not captured (SIP over TLS, or no SIP in
		// the capture): kept encrypted and labelled so, never decoded as
		// noise.
		transport, decodable = "RTP/SAVP", false
		in.report.EncryptedFlows++
	}
	c.desc = append(c.desc, &verbatimv1.Stream{StreamId: id, ParticipantId: sender, Media: "audio", Transport: transport,
		Decodable: decodable || dec != nil, Codecs: []*verbatimv1.Codec{codec}})
	s := &stream{id: id, call: c, srtp: dec, batcher: rtpbatch.New(rtpbatch.Config{CallID: c.id, StreamID: id, Shared: &in.scratch}, c.sealer),
		sent: verbatimv1.StreamMedia{StreamId: id}}
	c.streams[k.dst] = s
	r.flows[k] = s
	// The endpoints are all that is known of the parties.
	first := k
	if sender == "callee" {
		first = flowKey{k.dst, k.src}
	}
	parties := []*verbatimv1.Participant{
		{ParticipantId: "caller", Role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER,
			Identity: in.sealMsg(c, &verbatimv1.ParticipantIdentity{Uri: "rtp:" + first.src.String()})},
		{ParticipantId: "callee", Role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLEE,
			Identity: in.sealMsg(c, &verbatimv1.ParticipantIdentity{Uri: "rtp:" + first.dst.String()})},
	}
	if sender == "caller" {
		in.produce(schemas.TopicCalls, c.id, c, "started", at, &verbatimv1.CallStarted{
			CallId: c.id, StartedAt: timestamppb.New(at), Source: in.source,
			DataKeyId: c.keyID, ConversationId: c.conv, Signalling: in.sealMsg(c, &verbatimv1.SignallingIdentity{}),
			Participants: parties, Streams: c.desc,
		})
	} else {
		in.produce(schemas.TopicCalls, c.id, c, "updated-media", at, &verbatimv1.CallUpdated{
			CallId: c.id, UpdatedAt: timestamppb.New(at), Participants: parties, Streams: c.desc, Reason: "media"})
	}
	return s
}

// handOver gives packets held for flow k to s, the stream a SIP dialog
// has just described: media that came before its SDP is not lost.
func (r *rtpOnly) handOver(in *pcapIngest, k flowKey, s *stream) {
	c := r.candidates[k]
	if c == nil {
		return
	}
	delete(r.candidates, k)
	for _, h := range c.packets {
		in.media(s, &pcapread.Packet{Time: h.at, Src: k.src, Dst: k.dst, Proto: pcapread.UDP, Payload: h.payload})
	}
}

// expire ends the calls whose RTP stopped RTPTimeout before now.
func (r *rtpOnly) expire(in *pcapIngest, now time.Time) {
	for pair, rc := range r.calls {
		if now.Sub(rc.last) > in.cfg.RTPTimeout {
			r.end(in, pair, rc)
		}
	}
	// Candidates that never confirmed are not kept forever.
	for k, c := range r.candidates {
		if now.Sub(c.packets[len(c.packets)-1].at) > in.cfg.RTPTimeout {
			r.drop(in, k)
		}
	}
}

// drop gives up flow k's held packets, counting them as unmatched UDP.
func (r *rtpOnly) drop(in *pcapIngest, k flowKey) {
	if c := r.candidates[k]; c != nil {
		in.report.UnmatchedUDP += uint64(len(c.packets))
		delete(r.candidates, k)
	}
}

// endAll ends every call at its last packet: the capture is over.
func (r *rtpOnly) endAll(in *pcapIngest) {
	for k := range r.candidates {
		r.drop(in, k)
	}
	for pair, rc := range r.calls {
		r.end(in, pair, rc)
	}
}

func (r *rtpOnly) end(in *pcapIngest, pair pairKey, rc *rtpCall) {
	for k, s := range r.flows {
		if s.call == rc.c {
			delete(r.flows, k)
		}
	}
	delete(r.calls, pair)
	in.endCall(rc.c, rc.last, verbatimv1.EndReason_END_REASON_TIMEOUT, rc.first, rc.last, rc.last.Sub(rc.first), 0)
}
