// Package assemble turns the packets of one RTP stream, in arrival order,
// into continuous linear PCM: it reorders within a window, drops duplicates
// and packets too late to place, fills gaps with silence by RTP timestamp,
// and keeps the completeness report every RecordingStored carries.
package assemble

import (
	"slices"

	"github.com/verbatimrec/verbatim/processors/internal/cng"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Decoder appends the linear samples of one payload to dst.
type Decoder func(dst []int16, payload []byte) []int16

// Defaults for Config.
const (
	// DefaultWindow is the reorder window: 50 packets, one second of 20 ms
	// audio.
	DefaultWindow = 50
	// DefaultMaxGap is the longest silence filled for a timestamp jump, in
	// RTP clock ticks (60 s at 8 kHz); a longer jump is a discontinuity
	// and is not filled.
	DefaultMaxGap = 60 * 8000
)

// Config configures a Track.
type Config struct {
	StreamID string
	SSRC     uint32
	// PayloadType of the audio; packets of other types (telephone-event,
	// comfort noise) count as captured but are not decoded.
	PayloadType uint8
	Decode      Decoder
	// Decoders, when set, decode each of several payload types (a codec
	// change mid-call: a re-INVITE from PCMU to PCMA); PayloadType and
	// Decode are then unused.
	Decoders map[uint8]Decoder
	// Out receives the samples in order; the slice is reused after Out
	// returns.
	Out    func(samples []int16)
	Window int
	MaxGap int
	// SamplesPerTick is how many output samples one tick of the RTP clock
	// spans: 1 when decoders output at the RTP clock rate (G.711 into an
	// 8 kHz recording), 2 for G.722 (16 kHz audio on an 8 kHz clock) or
	// G.711 upsampled into a 16 kHz recording. 0 means 1.
	SamplesPerTick int
	// TicksPerSample is how many ticks of the RTP clock one output sample
	// spans, for clocks faster than the recording: 3 for Opus (48 kHz
	// clock) into a 16 kHz recording. 0 means 1. Only one of
	// SamplesPerTick and TicksPerSample may be above 1.
	TicksPerSample int
	// Mask, if set, says whether the audio of n ticks from RTP timestamp
	// ts must be replaced by silence (PCI: DTMF tones).
	Mask func(ts uint32, n int) bool
	// ComfortNoise, if set, plays RFC 3389 comfort-noise packets (of the
	// payload types CNPayloadTypes lists): from each one's timestamp to
	// the next packet's, the recording holds the noise it describes, as
	// the listener heard it. Without it those spans are silence.
	ComfortNoise   *cng.Generator
	CNPayloadTypes []uint8
	// IsEvent, if set, says whether a packet of payload type pt and n
	// bytes of payload is an RFC 4733 telephone-event: not audio, counted
	// as an event, never decoded.
	IsEvent func(pt uint8, n int) bool
}

type pending struct {
	seq     uint64
	ts      uint32
	dec     Decoder // nil: no audio to decode (see kind)
	kind    kind
	pt      uint8
	payload []byte
}

// kind says what a packet is, for the completeness report: every packet
// Add takes is counted exactly once, as an event, comfort noise, a
// duplicate, late, recorded or not decodable.
type kind uint8

const (
	audio kind = iota
	event
	comfortNoise
)

// Track assembles one stream. Not safe for concurrent use.
type Track struct {
	cfg      Config
	buf      []pending // sorted by seq, at most Window
	started  bool
	nextSeq  uint64
	nextTS   uint32
	noise    bool // the last packet placed was comfort noise
	samples  []int16
	silence  []int16
	report   verbatimv1.StreamCompleteness
	payloads [][]byte // recycled payload buffers
	// undecoded lists the payload types of audio packets no decoder took.
	undecoded []uint8
}

// New returns a Track.
func New(cfg Config) *Track {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxGap <= 0 {
		cfg.MaxGap = DefaultMaxGap
	}
	if cfg.SamplesPerTick <= 0 {
		cfg.SamplesPerTick = 1
	}
	if cfg.TicksPerSample <= 0 {
		cfg.TicksPerSample = 1
	}
	t := &Track{cfg: cfg, buf: make([]pending, 0, cfg.Window+1), silence: make([]int16, 160*cfg.SamplesPerTick)}
	t.report.StreamId, t.report.Ssrc = cfg.StreamID, cfg.SSRC
	return t
}

// Add takes one packet: extended sequence number, RTP timestamp, payload
// type and payload (copied).
func (t *Track) Add(seq uint64, ts uint32, pt uint8, payload []byte) {
	t.report.PacketsCaptured++
	k := audio
	switch {
	case t.cfg.IsEvent != nil && t.cfg.IsEvent(pt, len(payload)):
		k = event
		t.report.Events++
	case slices.Contains(t.cfg.CNPayloadTypes, pt):
		k = comfortNoise
		t.report.ComfortNoise++
	}
	if t.started && seq < t.nextSeq {
		if k == audio {
			t.report.Late++
		}
		return
	}
	// Insert in order; the common case appends at the end.
	i := len(t.buf)
	for i > 0 && t.buf[i-1].seq > seq {
		i--
	}
	if i > 0 && t.buf[i-1].seq == seq {
		if k == audio {
			t.report.Duplicates++
		}
		return
	}
	var p []byte
	if n := len(t.payloads); n > 0 {
		p, t.payloads = t.payloads[n-1][:0], t.payloads[:n-1]
	}
	t.buf = append(t.buf, pending{})
	copy(t.buf[i+1:], t.buf[i:])
	var dec Decoder
	switch {
	case k != audio:
	case t.cfg.Decoders != nil:
		dec = t.cfg.Decoders[pt]
	case pt == t.cfg.PayloadType:
		dec = t.cfg.Decode
	}
	t.buf[i] = pending{seq: seq, ts: ts, dec: dec, kind: k, pt: pt, payload: append(p, payload...)}
	if len(t.buf) > t.cfg.Window {
		t.emit()
	}
}

// emit outputs the lowest buffered packet.
func (t *Track) emit() {
	p := t.buf[0]
	copy(t.buf, t.buf[1:])
	t.buf = t.buf[:len(t.buf)-1]
	defer func() { t.payloads = append(t.payloads, p.payload) }()

	if t.started && p.seq > t.nextSeq {
		t.report.Gaps = AppendGap(t.report.Gaps, t.nextSeq, p.seq-1)
	}
	t.nextSeq = p.seq + 1
	if p.dec == nil {
		switch {
		case p.kind == comfortNoise && t.cfg.ComfortNoise != nil && len(p.payload) > 0:
			t.fillTo(p.ts) // the span before this packet, at the level in force there
			_ = t.cfg.ComfortNoise.Set(p.payload)
			t.noise, t.started, t.nextTS = true, true, p.ts
		case p.kind == audio:
			// Audio no decoder takes: captured, not in the recording.
			t.report.NotDecodable++
			if !slices.Contains(t.undecoded, p.pt) && len(t.undecoded) < 8 {
				t.undecoded = append(t.undecoded, p.pt)
			}
		}
		return
	}
	t.fillTo(p.ts)
	t.noise = false
	t.samples = p.dec(t.samples[:0], p.payload)
	ticks := len(t.samples) * t.cfg.TicksPerSample / t.cfg.SamplesPerTick
	if t.cfg.Mask != nil && t.cfg.Mask(p.ts, ticks) { // ticks of the RTP clock
		clear(t.samples)
	}
	t.cfg.Out(t.samples)
	t.report.PacketsInRecording++
	t.started = true
	t.nextTS = p.ts + uint32(ticks)
}

// fillTo fills the span from the expected timestamp to ts: comfort noise
// while a comfort-noise packet is in force, silence for lost packets.
func (t *Track) fillTo(ts uint32) {
	if !t.started {
		return
	}
	if gap := int32(ts - t.nextTS); gap > 0 && int(gap) <= t.cfg.MaxGap*t.cfg.TicksPerSample {
		t.fill(int(gap) * t.cfg.SamplesPerTick / t.cfg.TicksPerSample)
	}
}

func (t *Track) fill(n int) {
	for n > 0 {
		k := min(n, len(t.silence))
		if t.noise {
			t.samples = t.cfg.ComfortNoise.Append(t.samples[:0], k)
			t.cfg.Out(t.samples)
		} else {
			t.cfg.Out(t.silence[:k])
		}
		n -= k
	}
}

// Undecoded returns the payload types of the audio packets no decoder took
// (at most 8), in the order first seen.
func (t *Track) Undecoded() []uint8 { return t.undecoded }

// Close outputs everything still buffered and returns the completeness
// report: PacketsCaptured = PacketsInRecording + Events + ComfortNoise +
// Duplicates + Late + NotDecodable.
func (t *Track) Close() *verbatimv1.StreamCompleteness {
	for len(t.buf) > 0 {
		t.emit()
	}
	return &t.report
}

// Upsample2 wraps dec so that it outputs twice the samples, at twice the
// rate: G.711 placed into a 16 kHz recording beside G.722. Each new sample
// is the four-point (cubic Lagrange) interpolation midway between two
// input samples, which keeps narrowband speech clean; the output lags the
// input by two input samples (250 µs at 8 kHz). The state carries from
// payload to payload, so each stream needs its own wrapper.
func Upsample2(dec Decoder) Decoder {
	var h [3]int32 // the last three input samples, oldest first
	var in []int16
	return func(dst []int16, payload []byte) []int16 {
		in = dec(in[:0], payload)
		for _, v := range in {
			x := int32(v)
			mid := (9*(h[1]+h[2]) - h[0] - x + 8) >> 4
			dst = append(dst, int16(h[1]), int16(max(-32768, min(32767, mid))))
			h[0], h[1], h[2] = h[1], h[2], x
		}
		return dst
	}
}

// MaxGaps bounds the gaps a report lists: a source that jumps its sequence
// numbers at every packet never grows the report.
const MaxGaps = 64

// AppendGap adds the gap first..last to gaps. Past MaxGaps, the last gap is
// widened by this one's length instead, so that the missing packets still
// add up (sum of last-first+1) though their numbers are no longer listed.
func AppendGap(gaps []*verbatimv1.SequenceGap, first, last uint64) []*verbatimv1.SequenceGap {
	if len(gaps) < MaxGaps {
		return append(gaps, &verbatimv1.SequenceGap{First: first, Last: last})
	}
	gaps[len(gaps)-1].Last += last - first + 1
	return gaps
}
