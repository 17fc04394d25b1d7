package processors

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pion/opus"
	"github.com/pion/rtp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/processors/internal/assemble"
	"github.com/verbatimrec/verbatim/processors/internal/cng"
	"github.com/verbatimrec/verbatim/processors/internal/g711"
	"github.com/verbatimrec/verbatim/processors/internal/g722"
	"github.com/verbatimrec/verbatim/processors/internal/g729"
	"github.com/verbatimrec/verbatim/processors/internal/oggopus"
	"github.com/verbatimrec/verbatim/processors/internal/wav"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Recording sample rates: narrowband, and wideband when any stream of the
// call is G.722 (its narrowband streams are then upsampled).
const (
	narrowband = 8000
	wideband   = 16000
)

// recordingRate returns the sample rate of a recording of these streams.
func recordingRate(ss []*verbatimv1.Stream) int {
	for _, s := range ss {
		for _, c := range s.GetCodecs() {
			if d := decodable(c); d == "G722" || d == "OPUS" {
				return wideband
			}
		}
	}
	return narrowband
}

type streamRec struct {
	meta       *verbatimv1.Stream
	channel    int // 0 left (caller), 1 right (callee)
	track      *assemble.Track
	started    bool
	notDecoded string   // why not, for a stream kept raw only
	encrypted  bool     // kept raw because its keys were not captured
	ssrcs      []uint32 // sources seen, in order (at most maxSSRCs)
	packets    uint64   // captured, for a stream kept raw only
	eventPT    int      // telephone-event payload type, -1 if none declared
	dtmf       dtmfTrack
	ssrc       uint32                           // of the current track
	reports    []*verbatimv1.StreamCompleteness // of earlier sources (SSRC changes)
	ogg        *oggStream                       // an Opus stream, kept as Ogg Opus
	closeDecs  func()                           // frees stateful decoders (G.729)
}

// canDecode reports whether this build decodes any of the stream's codecs.
func canDecode(s *verbatimv1.Stream) bool {
	return slices.ContainsFunc(s.GetCodecs(), func(c *verbatimv1.Codec) bool { return decodable(c) != "" })
}

// oggStream spools one Opus stream as Ogg Opus, sealed under the process
// key like the PCM spool, until the recording is stored.
type oggStream struct {
	pt       uint8
	file     *os.File
	key      []byte
	sw       *seal.StreamWriter
	w        *oggopus.Writer
	started  bool
	ts0      uint32
	lastExt  uint64
	captured uint64
	written  uint64
	late     uint64
}

func (r *callRecording) newOggStream(s *streamRec, pt uint8) (*oggStream, error) {
	f, key, sw, err := newSpool(filepath.Dir(r.spool.Name()), "ogg-*", []byte("ogg\x00"+r.callID+"\x00"+s.meta.GetStreamId()))
	if err != nil {
		return nil, err
	}
	w, err := oggopus.NewWriter(sw, crc32.ChecksumIEEE([]byte(s.meta.GetStreamId())), 2)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &oggStream{pt: pt, file: f, key: key, sw: sw, w: w}, nil
}

// newSpool creates a temporary file sealed under a key that lives only in
// this process: a crash leaves ciphertext nobody can read, and the call is
// rebuilt from Kafka.
func newSpool(dir, pattern string, aad []byte) (*os.File, []byte, *seal.StreamWriter, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("processors: spool: %w", err)
	}
	key := make([]byte, seal.KeySize)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, nil, err
	}
	w, err := seal.NewSpoolWriter(f, key, aad)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, nil, nil, err
	}
	return f, key, w, nil
}

// opusPT returns the stream's Opus payload type.
func opusPT(s *verbatimv1.Stream) (uint8, bool) {
	for _, c := range s.GetCodecs() {
		if strings.EqualFold(c.GetName(), "opus") {
			return uint8(c.GetPayloadType()), true
		}
	}
	return 0, false
}

// callRecording builds one call's stereo WAV as its events arrive. Samples
// are sealed into a spool file as they are mixed, so memory stays small
// whatever the call's length; finish turns the spool into the stored
// object.
type callRecording struct {
	tenant, callID string
	opener         *seal.Sealer
	streams        map[string]*streamRec
	channels       map[string]int // by participant id, for SIPREC sessions
	mixer          *wav.Mixer
	rate           int // samples per second
	spool          *os.File
	spoolKey       []byte
	spoolW         *seal.StreamWriter
	opts           recordOptions
	pcmBytes       int64
	pkt            rtp.Packet
	plain          []byte
	err            error
}

// recordOptions say how a call is recorded.
type recordOptions struct {
	pci      bool // mask DTMF: digits hidden, tones silenced
	silentCN bool // comfort-noise spans as silence
	// retainUntil locks the objects until then (zero: not locked).
	retainUntil time.Time
}

// newCallRecording starts a recording of streams whose timeline begins at
// t0, the earliest first arrival of any of them.
func newCallRecording(tenant, callID string, streams []*verbatimv1.Stream, t0 time.Time, opener *seal.Sealer, spoolDir string, opts recordOptions) (*callRecording, error) {
	f, key, w, err := newSpool(spoolDir, "pcm-*", []byte("spool\x00"+callID))
	if err != nil {
		return nil, err
	}
	r := &callRecording{tenant: tenant, callID: callID, opener: opener, streams: map[string]*streamRec{},
		spool: f, spoolKey: key, spoolW: w, opts: opts, rate: recordingRate(streams)}
	r.mixer = wav.NewMixer(writerFunc(r.writePCM), r.rate, t0, 0)
	r.setStreams(streams)
	return r, nil
}

func (r *callRecording) setStreams(ss []*verbatimv1.Stream) {
	for _, s := range ss {
		if cur, ok := r.streams[s.GetStreamId()]; ok {
			cur.meta = s
			continue
		}
		ch := r.channelOf(s.GetParticipantId())
		ept := -1
		for _, c := range s.GetCodecs() {
			if strings.EqualFold(c.GetName(), "telephone-event") {
				ept = int(c.GetPayloadType())
			}
		}
		r.streams[s.GetStreamId()] = &streamRec{meta: s, channel: ch, eventPT: ept}
	}
}

// decoders returns a decoder for each payload type of the stream this
// build can decode (G.711 µ-law and A-law, G.722, L16 at 8 kHz, and G.729
// when built with libbcg729), each giving samples at the recording's rate:
// a stream may change codec mid-call. close frees stateful decoders.
func decoders(s *verbatimv1.Stream, rate int) (m map[uint8]assemble.Decoder, close func()) {
	m = map[uint8]assemble.Decoder{}
	var g *g729.Decoder
	var g7 *g722.Decoder
	// decoder returns the decoder of a codec this build decodes (a name
	// decodable gives), giving samples at the recording's rate, or nil.
	decoder := func(name string) assemble.Decoder {
		var dec assemble.Decoder
		switch name {
		case "PCMU":
			dec = g711.DecodeUlaw
		case "PCMA":
			dec = g711.DecodeAlaw
		case "L16":
			dec = decodeL16
		case "G729":
			if g == nil {
				g = g729.New()
			}
			dec = g.Decode
		case "G722":
			// Wideband: the recording is at 16 kHz whenever a stream
			// has G.722 (recordingRate).
			if g7 == nil {
				g7 = g722.New()
			}
			return g7.Decode
		case "OPUS":
			// Decoded at the recording's rate (16 kHz: recordingRate).
			d, err := newOpusDecoder(rate)
			if err != nil {
				return nil
			}
			return d
		default:
			return nil
		}
		if rate == wideband {
			dec = assemble.Upsample2(dec)
		}
		return dec
	}
	for _, c := range s.GetCodecs() {
		if dec := decoder(decodable(c)); dec != nil {
			m[uint8(c.GetPayloadType())] = dec
		}
	}
	// Static payload types (RFC 3551) mean the same with or without SDP:
	// a packet of one that no SDP line of the stream names is decoded by
	// the static assignment. G.722 (9) only in a wideband recording.
	for pt, name := range staticPayloadTypes {
		named := slices.ContainsFunc(s.GetCodecs(), func(c *verbatimv1.Codec) bool { return c.GetPayloadType() == uint32(pt) })
		if named || (name == "G729" && !g729.Available) || (name == "G722" && rate != wideband) {
			continue
		}
		if dec := decoder(name); dec != nil {
			m[pt] = dec
		}
	}
	return m, func() {
		if g != nil {
			g.Close()
		}
	}
}

// decodable returns the codec's name if this build decodes it into a
// recording, or "".
func decodable(c *verbatimv1.Codec) string {
	name := strings.ToUpper(c.GetName())
	if withoutDecoders[name] {
		return ""
	}
	switch name {
	case "PCMU", "PCMA":
		return name
	case "L16":
		if (c.GetClockRate() == 8000 || c.GetClockRate() == 0) && c.GetChannels() <= 1 {
			return name
		}
	case "G729":
		if g729.Available {
			return name
		}
	case "G722":
		if c.GetChannels() <= 1 {
			return name
		}
	case "OPUS":
		return name
	}
	return ""
}

// withoutDecoders makes this build act as one without some decoders
// (tests: a recording made by an earlier build, then reprocessed).
var withoutDecoders map[string]bool //nolint:gochecknoglobals // set by tests only

// omitMediaEnded makes this build announce recordings as versions before
// RecordingStored.media_ended did (tests).
var omitMediaEnded bool //nolint:gochecknoglobals // set by tests only

// Revision names the processor's way of making a recording. Bump it with
// any change that alters what a recording of the same media holds (a
// decoder fixed, a new concealment), so that `verbatim reprocess` can tell
// a recording made by this code from one made before it.
const Revision = "r1"

// Processing describes what this build makes of a call's media: the
// revision, the codecs it decodes, how it fills comfort noise, and "pci"
// when DTMF is masked (RecordingStored.processing). Two runs with the same
// processing record the same media alike.
func Processing(silentCN, pci bool) string {
	var names []string
	for _, n := range []string{"G722", "G729", "L16", "OPUS", "PCMA", "PCMU"} {
		if decodable(&verbatimv1.Codec{Name: n}) != "" {
			names = append(names, n)
		}
	}
	cn := "noise"
	if silentCN {
		cn = "silence"
	}
	s := Revision + " decoders=" + strings.Join(names, ",") + " cn=" + cn
	if pci {
		s += " pci"
	}
	return s
}

func (p *processor) processing(tenant string) string {
	return Processing(p.cfg.SilentComfortNoise, p.cfg.PCI != nil && p.cfg.PCI(tenant))
}

// opusClock is the RTP clock rate of Opus (RFC 7587), whatever its audio.
const opusClock = 48000

// newOpusDecoder decodes Opus (SILK, Hybrid and CELT, pion/opus, pure Go)
// to mono at rate. A packet that does not decode is silence for its
// duration: like lost packets, which pion/opus does not conceal either.
func newOpusDecoder(rate int) (assemble.Decoder, error) {
	d, err := opus.NewDecoderWithOutput(rate, 1)
	if err != nil {
		return nil, fmt.Errorf("processors: opus decoder: %w", err)
	}
	buf := make([]int16, rate*120/1000) // the longest packet: 120 ms
	return func(dst []int16, payload []byte) []int16 {
		n, err := d.DecodeToInt16(payload, buf)
		if err != nil {
			n = oggopus.Duration(payload) * rate / opusClock
			clear(buf[:min(n, len(buf))])
		}
		return append(dst, buf[:min(n, len(buf))]...)
	}, nil
}

// staticPayloadTypes are the RFC 3551 static audio assignments this build
// may decode.
var staticPayloadTypes = map[uint8]string{0: "PCMU", 8: "PCMA", 9: "G722", 18: "G729"} //nolint:gochecknoglobals // a constant table

// cnPayloadTypes returns the stream's RFC 3389 comfort-noise payload types
// (13, or a dynamic CN/8000); 13 is comfort noise by its static
// assignment even when no SDP line names it.
func cnPayloadTypes(s *verbatimv1.Stream) []uint8 {
	var pts []uint8
	named13 := false
	for _, c := range s.GetCodecs() {
		if strings.EqualFold(c.GetName(), "CN") {
			pts = append(pts, uint8(c.GetPayloadType()))
		}
		named13 = named13 || c.GetPayloadType() == 13
	}
	if !named13 {
		pts = append(pts, 13)
	}
	return pts
}

// decodeL16 decodes RFC 3551 L16: 16-bit big-endian linear samples.
func decodeL16(dst []int16, payload []byte) []int16 {
	for i := 0; i+1 < len(payload); i += 2 {
		dst = append(dst, int16(binary.BigEndian.Uint16(payload[i:])))
	}
	return dst
}

// channelOf is the channel of a participant's streams: the caller's left
// and the callee's right (passive capture); a SIPREC session's first
// participant (of the metadata, or of the stream list) left and the
// others right.
func (r *callRecording) channelOf(participant string) int {
	if ch, ok := r.channels[participant]; ok {
		return ch
	}
	if r.channels == nil {
		r.channels = map[string]int{}
	}
	ch := 1
	switch participant {
	case "caller":
		ch = 0
	case "callee":
	default:
		left := false
		for _, c := range r.channels {
			left = left || c == 0
		}
		if !left {
			ch = 0
		}
	}
	r.channels[participant] = ch
	return ch
}

// batch adds one PacketBatch.
func (r *callRecording) batch(pb *verbatimv1.PacketBatch) error {
	s, ok := r.streams[pb.GetStreamId()]
	if !ok {
		s = &streamRec{meta: &verbatimv1.Stream{StreamId: pb.GetStreamId()}, channel: 1,
			notDecoded: "the call's SDP does not describe this stream; the packets are in the raw media object"}
		r.streams[pb.GetStreamId()] = s
	}
	first := time.Unix(0, pb.GetFirstArrivalUnixNano())
	if n := len(s.ssrcs); (n == 0 || s.ssrcs[n-1] != pb.GetSsrc()) && n < maxSSRCs && !slices.Contains(s.ssrcs, pb.GetSsrc()) {
		s.ssrcs = append(s.ssrcs, pb.GetSsrc())
	}
	if s.notDecoded != "" {
		if s.ogg != nil {
			// Opus that this build does not decode: kept as Ogg Opus.
			return r.opusBatch(s, pb)
		}
		s.packets += uint64(pb.GetPacketCount())
		return nil
	}
	if s.track == nil && strings.Contains(s.meta.GetTransport(), "SAVP") && !s.meta.GetDecodable() {
		s.encrypted = true
		s.notDecoded = "SRTP whose keys were not captured (DTLS-SRTP, or SDES over TLS): the encrypted packets are in the raw media object"
		if strings.HasPrefix(s.meta.GetTransport(), "ZRTP") {
			s.notDecoded = "ZRTP: the SRTP keys were agreed inside the media and cannot be captured; the encrypted packets are in the raw media object"
		}
		s.packets += uint64(pb.GetPacketCount())
		return nil
	}
	if s.track != nil && pb.GetSsrc() != s.ssrc {
		// A new source on the stream (transfer, re-INVITE): its sequence
		// numbers and timestamps start anew. Close the old source's
		// track and start the new one where it arrives.
		s.reports = appendReport(s.reports, s.track.Close())
		s.track = nil
		if s.closeDecs != nil {
			s.closeDecs() // the new source gets fresh decoder state
			s.closeDecs = nil
		}
		r.mixer.Align(s.channel, first)
	}
	if s.ogg == nil && s.track == nil {
		// Opus is decoded into the recording, and kept as it came too,
		// as Ogg Opus in an object of its own.
		if pt, ok := opusPT(s.meta); ok {
			var err error
			if s.ogg, err = r.newOggStream(s, pt); err != nil {
				return err
			}
		}
	}
	if s.ogg != nil {
		if err := r.opusBatch(s, pb); err != nil {
			return err
		}
	}
	if s.track == nil {
		decs, closeDecs := decoders(s.meta, r.rate)
		s.closeDecs = closeDecs
		if len(decs) == 0 {
			// Kept raw, and said so in the completeness report.
			var names []string
			for _, c := range s.meta.GetCodecs() {
				names = append(names, c.GetName())
			}
			s.notDecoded = fmt.Sprintf("no decoder for %s in this build (G.711, G.722 and L16; G.729 with -tags bcg729); the packets are in the raw media object",
				strings.Join(names, ", "))
			if s.ogg == nil { // else its packets are counted in the Ogg Opus object
				s.packets += uint64(pb.GetPacketCount())
			}
			return nil
		}
		ch := s.channel
		cfg := assemble.Config{StreamID: s.meta.GetStreamId(), SSRC: pb.GetSsrc(), Decoders: decs,
			SamplesPerTick: r.rate / narrowband, // an 8 kHz RTP clock, but for Opus
			Out:            func(samples []int16) { r.fail(r.mixer.Write(ch, samples)) },
			IsEvent:        func(pt uint8, n int) bool { return r.isEvent(s, pt, n) },
			CNPayloadTypes: cnPayloadTypes(s.meta)}
		if len(cfg.CNPayloadTypes) > 0 && !r.opts.silentCN {
			// Seeded by stream and source: the same media always gives
			// the same recording.
			cfg.ComfortNoise = cng.New(uint64(crc32.ChecksumIEEE([]byte(s.meta.GetStreamId())))<<32 | uint64(pb.GetSsrc()))
		}
		if _, isOpus := opusPT(s.meta); isOpus {
			cfg.SamplesPerTick, cfg.TicksPerSample = 1, opusClock/r.rate
		}
		if r.opts.pci {
			cfg.Mask = s.dtmf.masked
		}
		s.track, s.ssrc = assemble.New(cfg), pb.GetSsrc()
	}
	if !s.started {
		s.started = true
		r.mixer.Start(s.channel, first)
	}
	r.mixer.Arrived(first)
	var err error
	if r.plain, err = r.opener.Open(r.plain, schemas.SealedRTPPackets, pb.GetPackets()); err != nil {
		return permanent{fmt.Errorf("batch %d of %s does not open under the call's key (tampered or corrupt): %w", pb.GetBatchIndex(), pb.GetStreamId(), err)}
	}
	// Extended sequence numbers: the batch gives the first; later packets
	// are placed relative to it by their 16-bit numbers.
	base := pb.GetFirstSequence()
	offsets := pb.GetArrivalOffsetsUs()
	i := -1
	err = schemas.Packets(r.plain, func(b []byte) error {
		i++
		if err := r.pkt.Unmarshal(b); err != nil {
			return nil // ingest batches only valid RTP; skip defensively
		}
		if r.isEvent(s, r.pkt.PayloadType, len(r.pkt.Payload)) {
			at := first
			if i < len(offsets) {
				at = at.Add(time.Duration(offsets[i]) * time.Microsecond)
			}
			s.dtmf.add(r.pkt.Timestamp, r.pkt.Payload, at)
		}
		// Within a batch a packet is at most half the sequence space from
		// the first one, before or after it.
		ext := uint64(int64(base) + int64(int16(r.pkt.SequenceNumber-uint16(base))))
		s.track.Add(ext, r.pkt.Timestamp, r.pkt.PayloadType, r.pkt.Payload)
		return nil
	})
	if err != nil {
		return err
	}
	return r.err
}

// opusBatch writes an Opus stream's packets, in order, into its Ogg file;
// packets that come after a later one are counted late.
func (r *callRecording) opusBatch(s *streamRec, pb *verbatimv1.PacketBatch) error {
	var err error
	if r.plain, err = r.opener.Open(r.plain, schemas.SealedRTPPackets, pb.GetPackets()); err != nil {
		return permanent{fmt.Errorf("batch %d of %s does not open under the call's key (tampered or corrupt): %w", pb.GetBatchIndex(), pb.GetStreamId(), err)}
	}
	o, base := s.ogg, pb.GetFirstSequence()
	return schemas.Packets(r.plain, func(b []byte) error {
		if err := r.pkt.Unmarshal(b); err != nil || r.pkt.PayloadType != o.pt {
			return nil
		}
		o.captured++
		ext := uint64(int64(base) + int64(int16(r.pkt.SequenceNumber-uint16(base))))
		if o.started && ext <= o.lastExt {
			o.late++
			return nil
		}
		if !o.started {
			o.started, o.ts0 = true, r.pkt.Timestamp
		}
		o.lastExt = ext
		o.written++
		granule := uint64(r.pkt.Timestamp-o.ts0) + uint64(oggopus.Duration(r.pkt.Payload))
		return o.w.WritePacket(r.pkt.Payload, granule)
	})
}

// isEvent reports whether a packet of stream s carries an RFC 4733 event:
// its payload type is the declared telephone-event, or, when none is
// declared (RTP found without SDP), an undeclared dynamic type with the
// event payload's 4 bytes.
func (r *callRecording) isEvent(s *streamRec, pt uint8, n int) bool {
	if s.eventPT >= 0 {
		return int(pt) == s.eventPT
	}
	if pt < 96 || pt > 127 || n != 4 {
		return false
	}
	for _, c := range s.meta.GetCodecs() {
		if c.GetPayloadType() == uint32(pt) {
			return false
		}
	}
	return true
}

// digits returns the DTMF keyed on every stream, in time order.
func (r *callRecording) digits() []dtmfEvent {
	var all []dtmfEvent
	for _, s := range r.streams {
		all = append(all, s.dtmf.events...)
	}
	slices.SortStableFunc(all, func(a, b dtmfEvent) int { return a.at.Compare(b.at) })
	return all
}

// abandon removes the spool of a recording that will not be finished.
func (r *callRecording) abandon() {
	r.spool.Close()
	os.Remove(r.spool.Name())
	for _, s := range r.streams {
		if s.ogg != nil {
			s.ogg.file.Close()
			os.Remove(s.ogg.file.Name())
		}
		if s.closeDecs != nil {
			s.closeDecs()
			s.closeDecs = nil
		}
	}
}

func (r *callRecording) fail(err error) {
	if err != nil && r.err == nil {
		r.err = err
	}
}

func (r *callRecording) writePCM(p []byte) (int, error) {
	r.pcmBytes += int64(len(p))
	return r.spoolW.Write(p)
}

// finish closes the tracks and the mixer, then writes header and PCM,
// sealed under a fresh recording key, as one object, and returns the event
// announcing it. The spool is removed.
func (r *callRecording) finish(ctx context.Context, km keys.Manager, store objstore.Store, recordingID, objectKey string, end *verbatimv1.MediaEnded) (*verbatimv1.RecordingStored, *keys.DataKey, error) {
	defer os.Remove(r.spool.Name())
	defer r.spool.Close()
	var report []*verbatimv1.StreamCompleteness
	var ledgers []*verbatimv1.StreamLedger
	for _, s := range r.streams {
		l := &verbatimv1.StreamLedger{StreamId: s.meta.GetStreamId(), Ssrcs: s.ssrcs}
		ledgers = append(ledgers, l)
		report = append(report, s.reports...)
		var segments []*verbatimv1.StreamCompleteness
		switch {
		case s.ogg != nil && s.track == nil:
			o := s.ogg
			report = append(report, &verbatimv1.StreamCompleteness{StreamId: s.meta.GetStreamId(), PacketsCaptured: o.captured,
				PacketsInRecording: o.written, Late: o.late,
				NotDecoded: "Opus: kept as Ogg Opus in its own object (stream_objects), not transcoded into the WAV"})
			// Its audio is in the Ogg object, not in the recording.
			l.Captured, l.NotDecodable, l.Late = o.captured, o.written, o.late
			l.Detail = "Opus is kept as Ogg Opus in its own object (stream_objects), not decoded into the recording"
		case s.track != nil:
			last := s.track.Close()
			segments = append(slices.Clone(s.reports), last)
			report = append(report, last)
			if pts := s.track.Undecoded(); len(pts) > 0 {
				l.Detail = undecodedDetail(s.meta, pts)
				if last.GetPacketsInRecording() == 0 {
					last.NotDecoded = l.Detail // nothing of this source is in the recording
				}
			}
		default:
			segments = s.reports
			report = append(report, &verbatimv1.StreamCompleteness{StreamId: s.meta.GetStreamId(),
				PacketsCaptured: s.packets, NotDecoded: s.notDecoded})
			l.Captured, l.Detail = s.packets, s.notDecoded
			if s.encrypted {
				l.EncryptedNoKeys = s.packets
			} else {
				l.NotDecodable = s.packets
			}
		}
		var sum verbatimv1.StreamCompleteness
		for _, sc := range segments {
			addCounts(&sum, sc)
		}
		l.Captured += sum.GetPacketsCaptured()
		l.Recorded += sum.GetPacketsInRecording()
		l.Events += sum.GetEvents()
		l.ComfortNoise += sum.GetComfortNoise()
		l.Duplicate += sum.GetDuplicates()
		l.Late += sum.GetLate()
		l.NotDecodable += sum.GetNotDecodable()
		for _, g := range sum.GetGaps() {
			l.NeverCaptured += g.GetLast() - g.GetFirst() + 1
		}
	}
	slices.SortStableFunc(report, func(a, b *verbatimv1.StreamCompleteness) int {
		return strings.Compare(a.GetStreamId(), b.GetStreamId())
	})
	if r.err != nil {
		return nil, nil, r.err
	}
	// Nothing is stored, and nothing announced, for a ledger that does not
	// balance: the call fails with the reason and its raw media is kept.
	ledgers, err := settle(ledgers, end)
	if err != nil {
		return nil, nil, permanent{err}
	}
	frames, err := r.mixer.Close()
	if err != nil {
		return nil, nil, err
	}
	if err := r.spoolW.Close(); err != nil {
		return nil, nil, err
	}
	dk, err := km.GenerateDataKey(ctx, r.tenant)
	if err != nil {
		return nil, nil, fmt.Errorf("processors: recording key: %w", err)
	}
	if _, err := r.spool.Seek(0, io.SeekStart); err != nil {
		return nil, nil, err
	}
	spool, err := seal.NewStreamReader(r.spool, r.spoolKey, []byte("spool\x00"+r.callID))
	if err != nil {
		return nil, nil, err
	}
	hdr := wav.Header(2, r.rate, uint32(r.pcmBytes))
	pSum, cSum, pN, cN, err := sealAndPut(ctx, store, dk.Plaintext, r.tenant, objectKey,
		io.MultiReader(bytes.NewReader(hdr[:]), spool), int64(len(hdr))+r.pcmBytes, r.opts.retainUntil)
	if err != nil {
		return nil, nil, fmt.Errorf("processors: store recording %s: %w", objectKey, err)
	}
	var objects []*verbatimv1.StreamObject
	for _, s := range r.streams {
		if s.ogg == nil {
			continue
		}
		o, err := r.storeOgg(ctx, store, dk.Plaintext, objectKey, s)
		if err != nil {
			return nil, nil, err
		}
		objects = append(objects, o)
	}
	slices.SortFunc(objects, func(a, b *verbatimv1.StreamObject) int { return strings.Compare(a.GetStreamId(), b.GetStreamId()) })
	ev := &verbatimv1.RecordingStored{
		CallId: r.callID, RecordingId: recordingID, ObjectKey: objectKey, Format: "audio/wav",
		Duration: durationpb.New(time.Duration(frames) * time.Second / time.Duration(r.rate)), Channels: 2, SampleRate: uint32(r.rate),
		PlaintextSha256: pSum, CiphertextSha256: cSum, PlaintextSize: uint64(pN), CiphertextSize: uint64(cN),
		Key:           &verbatimv1.KeyReference{KeyId: "dk-" + recordingID, KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion},
		StoredAt:      timestamppb.Now(),
		Completeness:  report,
		StreamObjects: objects,
		Ledgers:       ledgers,
	}
	if !r.opts.retainUntil.IsZero() {
		ev.RetainUntil = timestamppb.New(r.opts.retainUntil)
	}
	return ev, &dk, nil
}

// storeOgg seals an Opus stream's Ogg file under the recording key and
// stores it beside the recording.
func (r *callRecording) storeOgg(ctx context.Context, store objstore.Store, key []byte, recordingKey string, s *streamRec) (*verbatimv1.StreamObject, error) {
	o := s.ogg
	defer os.Remove(o.file.Name())
	defer o.file.Close()
	if err := o.w.Close(); err != nil {
		return nil, err
	}
	if err := o.sw.Close(); err != nil {
		return nil, err
	}
	_, _, size, _ := o.sw.Sums()
	if _, err := o.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	plain, err := seal.NewStreamReader(o.file, o.key, []byte("ogg\x00"+r.callID+"\x00"+s.meta.GetStreamId()))
	if err != nil {
		return nil, err
	}
	objectKey := strings.TrimSuffix(recordingKey, ".wav.sealed") + "-" + s.meta.GetStreamId() + ".opus.sealed"
	pSum, cSum, pN, cN, err := sealAndPut(ctx, store, key, r.tenant, objectKey, plain, size, r.opts.retainUntil)
	if err != nil {
		return nil, fmt.Errorf("processors: store Opus stream %s: %w", objectKey, err)
	}
	return &verbatimv1.StreamObject{StreamId: s.meta.GetStreamId(), ObjectKey: objectKey, Format: "audio/ogg; codecs=opus",
		PlaintextSha256: pSum, CiphertextSha256: cSum, PlaintextSize: uint64(pN), CiphertextSize: uint64(cN)}, nil
}

// sealAndPut seals plain (size bytes) under key as it streams it into
// one stored object, and returns the digests and sizes of both forms.
func sealAndPut(ctx context.Context, store objstore.Store, key []byte, tenant, objectKey string, plain io.Reader, size int64, retainUntil time.Time) (pSum, cSum []byte, pN, cN int64, err error) {
	type sums struct {
		plain, sealed   []byte
		plainN, sealedN int64
		err             error
	}
	pr, pw := io.Pipe()
	done := make(chan sums, 1)
	go func() { // ends when the copy does; waited for below
		var out sums
		sw, err := seal.NewStreamWriter(pw, key, recordingAAD(tenant, objectKey))
		if err == nil {
			_, err = io.Copy(sw, plain)
		}
		if err == nil {
			err = sw.Close()
			out.plain, out.sealed, out.plainN, out.sealedN = sw.Sums()
		}
		out.err = err
		pw.CloseWithError(err)
		done <- out
	}()
	_, perr := store.Put(ctx, objectKey, pr, seal.SealedSize(size), objstore.PutOptions{ContentType: "application/vnd.verbatim.sealed", RetainUntil: retainUntil})
	pr.CloseWithError(perr)
	res := <-done
	if perr == nil {
		perr = res.err
	}
	return res.plain, res.sealed, res.plainN, res.sealedN, perr
}

// OpenRecording returns the plaintext of a sealed recording object as it is
// read, failing on any tampering, truncation or reordering (the reader
// returns an error, never unauthenticated bytes as if they were good).
func OpenRecording(sealed io.Reader, key []byte, tenant, objectKey string) (io.Reader, error) {
	return seal.NewStreamReader(sealed, key, recordingAAD(tenant, objectKey))
}

// recordingAAD binds a sealed recording to its tenant and object key.
func recordingAAD(tenant, objectKey string) []byte {
	return []byte("verbatim-recording\x00" + tenant + "\x00" + objectKey)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// maxSSRCs bounds the sources a ledger names: what an attacker sends
// (random SSRCs on a media port) never grows a recording's report.
const maxSSRCs = 16

// undecodedDetail says why audio packets of payload types pts had no
// decoder: what the stream's SDP names them, if anything.
func undecodedDetail(s *verbatimv1.Stream, pts []uint8) string {
	var parts []string
	for _, pt := range pts {
		name := ""
		for _, c := range s.GetCodecs() {
			if c.GetPayloadType() == uint32(pt) {
				name = c.GetName()
			}
		}
		if name == "" {
			parts = append(parts, fmt.Sprintf("payload type %d is named by no SDP of the call and no static assignment this build decodes", pt))
		} else {
			parts = append(parts, fmt.Sprintf("payload type %d (%s) has no decoder in this build", pt, name))
		}
	}
	return strings.Join(parts, "; ") + "; the packets are in the raw media object"
}

// settle completes each ledger with what ingest says it captured for the
// stream (MediaEnded: packets batched, SRTP packets dropped, stray packets,
// capture damage) and checks that its lines add up. Before, a ledger's
// Captured is what the processor received; packets ingest batched that
// never came are lost in transit. A stream ingest sent media for that the
// recording never saw (no description, no batch) gets a ledger of its own,
// all of it lost in transit: no stream is left out of the account.
func settle(ledgers []*verbatimv1.StreamLedger, end *verbatimv1.MediaEnded) ([]*verbatimv1.StreamLedger, error) {
	have := map[string]bool{}
	for _, l := range ledgers {
		have[l.GetStreamId()] = true
	}
	for _, m := range end.GetMedia() {
		if !have[m.GetStreamId()] {
			ledgers = append(ledgers, &verbatimv1.StreamLedger{StreamId: m.GetStreamId()})
			have[m.GetStreamId()] = true
		}
	}
	slices.SortFunc(ledgers, func(a, b *verbatimv1.StreamLedger) int { return strings.Compare(a.GetStreamId(), b.GetStreamId()) })
	sent := map[string]*verbatimv1.StreamMedia{}
	for _, m := range end.GetMedia() {
		sent[m.GetStreamId()] = m
	}
	var errs []error
	for _, l := range ledgers {
		l.CaptureDamaged = end.GetCaptureDamaged()
		if m, ok := sent[l.GetStreamId()]; ok {
			received := l.GetCaptured()
			if m.GetPackets() > received {
				l.LostInTransit = m.GetPackets() - received
			}
			l.SrtpAuthFailed, l.SrtpReplayed, l.Stray = m.GetSrtpAuthFailures(), m.GetSrtpReplayed(), m.GetStrayPackets()
			// Received more than ingest sent: the check below fails.
			l.Captured = m.GetPackets() + l.SrtpAuthFailed + l.SrtpReplayed + l.Stray
		}
		if err := schemas.CheckLedger(l); err != nil {
			errs = append(errs, err)
		}
	}
	return ledgers, errors.Join(errs...)
}

// appendReport adds a closed source's report to a stream's, or, past
// maxSSRCs sources, adds its counts into the last one: however many
// sources a stream has, its report stays bounded.
func appendReport(rs []*verbatimv1.StreamCompleteness, r *verbatimv1.StreamCompleteness) []*verbatimv1.StreamCompleteness {
	if len(rs) < maxSSRCs {
		return append(rs, r)
	}
	last := rs[len(rs)-1]
	last.Ssrc = 0 // several sources
	addCounts(last, r)
	return rs
}

// addCounts adds src's packet counts and gaps to dst's.
func addCounts(dst, src *verbatimv1.StreamCompleteness) {
	dst.PacketsCaptured += src.GetPacketsCaptured()
	dst.PacketsInRecording += src.GetPacketsInRecording()
	dst.Duplicates += src.GetDuplicates()
	dst.Late += src.GetLate()
	dst.Events += src.GetEvents()
	dst.ComfortNoise += src.GetComfortNoise()
	dst.NotDecodable += src.GetNotDecodable()
	for _, g := range src.GetGaps() {
		dst.Gaps = assemble.AppendGap(dst.Gaps, g.GetFirst(), g.GetLast())
	}
}
