package ingest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/ingest/internal/rtpbatch"
	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// The SIPREC server's sessions are recorded by the same engine as passive
// capture (pcapIngest), driven by messages instead of captured packets:
// one goroutine owns the calls, their streams and their batches, so the
// events, the key handling and the ledgers are those of passive capture.

type srsKind uint8

const (
	srsStart   srsKind = iota // a session was accepted: announce the call
	srsUpdate                 // a re-INVITE or UPDATE changed its streams or metadata
	srsEnd                    // the session ended
	srsAbandon                // the session was refused before it was answered
	srsMedia                  // packets received on one of its media ports
	srsSync                   // replies once every message before it is handled
)

// srsParty is one participant as the metadata names it.
type srsParty struct {
	id        string
	role      verbatimv1.ParticipantRole
	uri, name string
}

// srsStream is one recorded stream: what the SRC's offer says of it, and
// the SRS port it is received on.
type srsStream struct {
	id, participant, label string
	local                  netip.AddrPort
	offer                  sipdialog.Media    // the SRC's m-line: codecs, keys it encrypts with
	answer                 []sipdialog.Crypto // the tag the SRS's answer chose
	direction              string
}

// srsDesc is a snapshot of a session, made by the SIP side and read by the
// engine.
type srsDesc struct {
	sipCallID, fromTag string
	// csSessionIDs are the metadata's sipSessionIDs: the communication
	// sessions' Session-IDs (RFC 7989), or their Call-IDs.
	csSessionIDs []string
	parties      []srsParty
	streams      []srsStream
	vars         map[string]string
}

type srsPacket struct {
	dst, from netip.AddrPort // the SRS port it came to, and its source
	data      []byte
}

type srsMsg struct {
	kind    srsKind
	key     string // the session's dialog id
	callID  string // Verbatim's call id
	at      time.Time
	desc    *srsDesc
	dk      keys.DataKey
	reason  string
	end     verbatimv1.EndReason
	damaged string
	// ready is called once the call's key is stored and its first records
	// are on their way (nil), or when it cannot be (the error).
	ready func(error)
	// reply, for srsAbandon, says whether the call was abandoned (false:
	// it was ready first, and is recorded).
	reply chan bool
	// media
	pkts []srsPacket
	buf  *[]byte // holds pkts' data; given back after
}

// srsEngine is the engine's side of the server.
type srsEngine struct {
	in   *pcapIngest
	msgs chan *srsMsg
	kick chan struct{} // a key was acknowledged
	// outstanding are the bytes produced and not yet acknowledged.
	outstanding atomic.Int64
	// lastAck is when Kafka last acknowledged a record (unix nanos).
	lastAck atomic.Int64
	// overflow is called when outstanding passed the bound: the sessions
	// whose calls were ended then, with the reason.
	overflow    func(keys []string, why string)
	bound       int64
	overflowing bool
	since       time.Time // when outstanding last was under the bound
}

func (e *srsEngine) loop(ctx context.Context) {
	in := e.in
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pkt := &pcapread.Packet{Proto: pcapread.UDP}
	for in.err == nil {
		select {
		case m := <-e.msgs:
			e.handle(m, pkt)
		case <-e.kick:
			in.settleKeys(nil)
		case <-tick.C:
			in.settleKeys(nil)
		case <-ctx.Done():
			return
		}
		e.checkBound()
	}
}

func (e *srsEngine) handle(m *srsMsg, pkt *pcapread.Packet) {
	in := e.in
	switch m.kind {
	case srsMedia:
		var s *stream
		for _, p := range m.pkts {
			if s == nil || s.call.ended || p.dst != pkt.Dst {
				s = in.byAddr[p.dst]
			}
			if s == nil || s.call.ended {
				in.report.UnmatchedUDP++
				continue
			}
			in.report.Pcap.Frames++
			pkt.Frame, pkt.Time, pkt.Src, pkt.Dst, pkt.Payload = in.report.Pcap.Frames, m.at, p.from, p.dst, p.data
			in.media(s, pkt)
		}
		if m.buf != nil {
			*m.buf = (*m.buf)[:0]
			srsBufs.Put(m.buf)
		}
	case srsStart:
		e.start(m)
	case srsUpdate:
		if c, ok := in.calls[m.key]; ok && !c.ended {
			in.settleKeys(nil)
			ev := &verbatimv1.CallUpdated{CallId: c.id, UpdatedAt: timestamppb.New(m.at), Reason: m.reason}
			ev.Participants, ev.Streams = e.parties(c, m.desc)
			in.produce(schemas.TopicCalls, c.id, c, "updated-"+m.reason+"-"+m.at.UTC().Format(time.RFC3339Nano), m.at, ev)
			e.variables(c, m.desc, m.at)
		}
	case srsEnd:
		e.end(m.key, m.at, m.end, m.damaged)
	case srsAbandon:
		c, ok := in.calls[m.key]
		in.settleKeys(nil)
		abandoned := ok && !c.keyReady
		if abandoned {
			// Refused (503): nothing of it was produced but its key, which
			// names no record and is harmless.
			c.held, c.ended, c.abandoned = nil, true, true
			e.forget(c)
			delete(in.calls, m.key)
			in.report.Calls--
		}
		m.reply <- abandoned
	case srsSync:
		m.reply <- true
	}
}

func (e *srsEngine) start(m *srsMsg) {
	in := e.in
	c, err := in.newCallWithKey(m.callID, m.at, m.dk, func(error) {
		select {
		case e.kick <- struct{}{}:
		default: // the engine is already told
		}
	})
	if err != nil {
		m.ready(err)
		return
	}
	c.conv, c.onReady, c.started = c.id, m.ready, m.at
	in.calls[m.key] = c
	ev := &verbatimv1.CallStarted{
		CallId: c.id, StartedAt: timestamppb.New(m.at), Source: verbatimv1.CaptureSource_CAPTURE_SOURCE_SIPREC,
		DataKeyId: c.keyID, ConversationId: c.conv,
		Signalling: in.sealMsg(c, &verbatimv1.SignallingIdentity{SipCallId: m.desc.sipCallID, FromTag: m.desc.fromTag}),
		// The communication session's, not the recording session's: a
		// sipSessionID is a Session-ID, or (some SRCs) the CS's Call-ID.
		SessionKeys: sessionKeys(in.cfg.Tenant, m.desc.csSessionIDs, m.desc.csSessionIDs),
	}
	ev.Participants, ev.Streams = e.parties(c, m.desc)
	in.produce(schemas.TopicCalls, c.id, c, "started", m.at, ev)
	e.variables(c, m.desc, m.at)
}

// variables attaches the metadata's extension elements (vendor call data:
// Cisco, Oracle, Avaya UCID, Genesys...) as call variables, sealed.
func (e *srsEngine) variables(c *call, d *srsDesc, at time.Time) {
	if len(d.vars) == 0 {
		return
	}
	e.in.produce(schemas.TopicMetadata, c.id, c, "siprec-metadata-"+at.UTC().Format(time.RFC3339Nano), at, &verbatimv1.MetadataAttached{
		CallId: c.id, OccurredAt: timestamppb.New(at), Source: "verbatim-srs:rs-metadata",
		Personal: e.in.sealMsg(c, &verbatimv1.MetadataPersonal{CallVariables: d.vars}),
	})
}

// parties describes the session's participants and streams and maps each
// stream's SRS port to it.
func (e *srsEngine) parties(c *call, d *srsDesc) ([]*verbatimv1.Participant, []*verbatimv1.Stream) {
	in := e.in
	ps := make([]*verbatimv1.Participant, 0, len(d.parties))
	for _, p := range d.parties {
		ps = append(ps, &verbatimv1.Participant{ParticipantId: p.id, Role: p.role,
			Identity: in.sealMsg(c, &verbatimv1.ParticipantIdentity{Uri: p.uri, Number: aorNumber(p.uri), DisplayName: p.name})})
	}
	ss := make([]*verbatimv1.Stream, 0, len(d.streams))
	for _, sd := range d.streams {
		m := sd.offer
		var dec *srtpdec.Decryptor
		var decKey [sha256.Size]byte
		if strings.Contains(m.Transport, "SAVP") {
			dec, decKey = in.sdesDecryptor(c, sd.id, m.Crypto, sd.answer)
		}
		st := &verbatimv1.Stream{StreamId: sd.id, ParticipantId: sd.participant, Media: "audio", Transport: m.Transport,
			Decodable: m.Transport == "RTP/AVP" || dec != nil, Label: sd.label}
		st.Codecs = codecs(m.Codecs)
		ss = append(ss, st)
		s, ok := c.streams[sd.local]
		if !ok {
			s = &stream{id: sd.id, call: c, batcher: rtpbatch.New(rtpbatch.Config{CallID: c.id, StreamID: sd.id, Shared: &in.scratch}, c.sealer),
				sent: verbatimv1.StreamMedia{StreamId: sd.id}}
			c.streams[sd.local] = s
			in.byAddr[sd.local] = s
		}
		if dec != nil && (s.srtp == nil || s.srtpKey != decKey) {
			s.srtpPrev, s.srtp, s.srtpKey = s.srtp, dec, decKey
		}
	}
	c.remember(ss)
	return ps, ss
}

// end ends a session's call: its last batches, then MediaEnded and
// CallEnded, as for a captured call.
func (e *srsEngine) end(key string, at time.Time, reason verbatimv1.EndReason, damaged string) {
	in := e.in
	c, ok := in.calls[key]
	if !ok || c.ended {
		return
	}
	if damaged != "" && c.damaged == "" {
		c.damaged = damaged
	}
	in.settleKeys(nil)
	in.endCall(c, at, reason, c.started, at, at.Sub(c.started), 0)
	delete(in.calls, key)
}

// forget unmaps an abandoned call's ports.
func (e *srsEngine) forget(c *call) {
	for addr, s := range c.streams {
		if e.in.byAddr[addr] == s {
			delete(e.in.byAddr, addr)
		}
	}
}

// checkBound ends every session when what waits for Kafka passed the
// bound: their recordings end there, with the reason in their ledgers,
// rather than lose media silently later.
func (e *srsEngine) checkBound() {
	n := e.outstanding.Load()
	if n <= e.bound {
		e.overflowing, e.since = false, time.Now()
		return
	}
	if e.overflowing {
		return
	}
	e.overflowing = true
	why := fmt.Sprintf("Kafka did not acknowledge %d KiB of records for %s, past the SRS's media buffer (%d KiB): the recorder ended the session",
		n>>10, time.Since(e.since).Round(time.Millisecond), e.bound>>10)
	var ended []string
	now := time.Now()
	for key, c := range e.in.calls {
		if !c.ended && !c.abandoned {
			ended = append(ended, key)
			e.end(key, now, verbatimv1.EndReason_END_REASON_CAPTURE_ENDED, why)
		}
	}
	if e.overflow != nil {
		e.overflow(ended, why)
	}
}

// aorNumber is the user part of a SIP or tel URI: the number, for a
// telephone party.
func aorNumber(uri string) string {
	u := strings.TrimSpace(uri)
	for _, p := range []string{"sips:", "sip:", "tel:"} {
		if len(u) >= len(p) && strings.EqualFold(u[:len(p)], p) {
			u = u[len(p):]
			break
		}
	}
	u, _, _ = strings.Cut(u, "@")
	u, _, _ = strings.Cut(u, ";")
	return u
}
