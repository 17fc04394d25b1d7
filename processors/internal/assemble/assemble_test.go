package assemble_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"testing"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors/internal/assemble"
	"github.com/verbatimrec/verbatim/processors/internal/cng"
	"github.com/verbatimrec/verbatim/processors/internal/g711"
)

// copyDecoder stands in for a codec: one sample per payload byte.
func copyDecoder(dst []int16, p []byte) []int16 {
	for _, b := range p {
		dst = append(dst, int16(b))
	}
	return dst
}

func TestReorderGapsDuplicatesLate(t *testing.T) {
	var out []int16
	tr := assemble.New(assemble.Config{StreamID: "s", PayloadType: 0, Decode: copyDecoder, Window: 3,
		Out: func(s []int16) { out = append(out, s...) }})
	payload := func(seq int) []byte { return bytes.Repeat([]byte{byte(seq + 1)}, 4) }
	// 4 samples per packet; seq 3 lost, 5 duplicated, 7 before 6, and 1
	// again once it can no longer be placed.
	for _, seq := range []int{0, 1, 2, 4, 5, 5, 7, 6, 8, 9, 1} {
		tr.Add(uint64(seq), uint32(seq*4), 0, payload(seq))
	}
	rep := tr.Close()
	if rep.GetPacketsCaptured() != 11 || rep.GetPacketsInRecording() != 9 || rep.GetDuplicates() != 1 || rep.GetLate() != 1 {
		t.Fatalf("report %v", rep)
	}
	if len(rep.GetGaps()) != 1 || rep.GetGaps()[0].GetFirst() != 3 || rep.GetGaps()[0].GetLast() != 3 {
		t.Fatalf("gaps %v", rep.GetGaps())
	}
	if len(out) != 40 {
		t.Fatalf("%d samples, want 40 (10 packets of 4, the lost one as silence)", len(out))
	}
	for i := 0; i < 10; i++ {
		want := int16(i + 1)
		if i == 3 {
			want = 0
		}
		if out[i*4] != want {
			t.Fatalf("packet %d: sample %d, want %d (%v)", i, out[i*4], want, out)
		}
	}
}

// TestManifestStream assembles the PCMU stream of the G.711 sample, which
// lost nothing, and must equal the MANIFEST's pcm digest sample for sample.
func TestManifestStream(t *testing.T) {
	h := sha256.New()
	tr := assemble.New(assemble.Config{StreamID: "s", PayloadType: 0, Decode: g711.DecodeUlaw,
		Out: func(s []int16) { _ = binary.Write(h, binary.LittleEndian, s) }})
	stacktest.EachRTP(t, "pcap/wireshark_sip-rtp-g711.pcap", 0x343DA99B, func(pkt *rtp.Packet) {
		tr.Add(uint64(pkt.SequenceNumber), pkt.Timestamp, pkt.PayloadType, pkt.Payload)
	})
	rep := tr.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != "74b16195a4ab422b255a60446cee37540d289a5fbdbc863a48906b893a1db899" {
		t.Fatalf("pcm digest %s", got)
	}
	if rep.GetPacketsInRecording() != 425 || len(rep.GetGaps()) != 0 {
		t.Fatalf("report %v", rep)
	}
}

func BenchmarkAdd(b *testing.B) {
	tr := assemble.New(assemble.Config{PayloadType: 0, Decode: g711.DecodeUlaw, Out: func([]int16) {}})
	payload := make([]byte, 160)
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		tr.Add(seq, uint32(seq)*160, 0, payload)
		seq++
	}
}

// TestCodecChange: a re-INVITE switches the stream from PCMU to PCMA
// mid-call; both parts are decoded, each with its own decoder, and a
// telephone-event packet between them is not taken for audio.
func TestCodecChange(t *testing.T) {
	var out []int16
	tr := assemble.New(assemble.Config{StreamID: "s", Decoders: map[uint8]assemble.Decoder{0: g711.DecodeUlaw, 8: g711.DecodeAlaw},
		Out: func(s []int16) { out = append(out, s...) }})
	pay := func(b byte) []byte { return bytes.Repeat([]byte{b}, 160) }
	for i := range 10 {
		tr.Add(uint64(i), uint32(i*160), 0, pay(0x10))
	}
	tr.Add(10, 1600, 101, []byte{1, 0x80, 0, 160}) // an event
	for i := 11; i < 21; i++ {
		tr.Add(uint64(i), uint32(i*160), 8, pay(0x10))
	}
	rep := tr.Close()
	u, a := g711.DecodeUlaw(nil, []byte{0x10})[0], g711.DecodeAlaw(nil, []byte{0x10})[0]
	if len(out) != 21*160 || out[0] != u || out[11*160] != a || out[10*160] != 0 || rep.GetPacketsInRecording() != 20 {
		t.Fatalf("%d samples; first %d (want %d), after the change %d (want %d), event %d; in recording %d",
			len(out), out[0], u, out[11*160], a, out[10*160], rep.GetPacketsInRecording())
	}
}

// TestUpsample2 doubles the rate of an 8 kHz tone in 20 ms payloads and
// compares it with the same tone computed at 16 kHz, two input samples
// later: the interpolation must be clean (over 40 dB SNR) and every
// payload must give exactly twice its samples.
func TestUpsample2(t *testing.T) {
	const f = 1000.0
	dec := assemble.Upsample2(func(dst []int16, p []byte) []int16 {
		for i := 0; i+1 < len(p); i += 2 {
			dst = append(dst, int16(uint16(p[i])|uint16(p[i+1])<<8))
		}
		return dst
	})
	var out []int16
	n := 0
	for range 50 {
		p := make([]byte, 0, 320)
		for range 160 {
			v := int16(16000 * math.Sin(2*math.Pi*f*float64(n)/8000))
			p = append(p, byte(v), byte(uint16(v)>>8))
			n++
		}
		before := len(out)
		out = dec(out, p)
		if len(out)-before != 320 {
			t.Fatalf("160 samples gave %d", len(out)-before)
		}
	}
	var sig, noise float64
	for i := 8; i < len(out); i++ {
		want := 16000 * math.Sin(2*math.Pi*f*float64(i-4)/16000)
		d := float64(out[i]) - want
		sig += want * want
		noise += d * d
	}
	if snr := 10 * math.Log10(sig/noise); snr < 40 {
		t.Fatalf("upsampled tone SNR %.1f dB, want over 40", snr)
	} else {
		t.Logf("SNR %.1f dB", snr)
	}
}

// TestSamplesPerTick: with two output samples per RTP tick (G.722), a
// timestamp gap is filled with twice as many samples and the next
// packet's expected timestamp advances by ticks, not samples.
func TestSamplesPerTick(t *testing.T) {
	var out []int16
	tr := assemble.New(assemble.Config{PayloadType: 9, SamplesPerTick: 2,
		Decode: func(dst []int16, p []byte) []int16 {
			for _, b := range p {
				dst = append(dst, int16(b)+1, int16(b)+1)
			}
			return dst
		},
		Out: func(s []int16) { out = append(out, s...) }})
	p := make([]byte, 160)
	tr.Add(1, 0, 9, p)
	tr.Add(2, 160, 9, p)
	tr.Add(4, 480, 9, p) // packet 3 lost: 160 ticks, 320 samples of silence
	rep := tr.Close()
	if len(out) != 4*320 {
		t.Fatalf("%d samples, want %d", len(out), 4*320)
	}
	for i, v := range out {
		if silent := i >= 640 && i < 960; silent != (v == 0) {
			t.Fatalf("sample %d = %d", i, v)
		}
	}
	if len(rep.GetGaps()) != 1 || rep.GetPacketsInRecording() != 3 {
		t.Fatalf("report %v", rep)
	}
}

// TestComfortNoise: an RFC 3389 packet between talk spurts fills the span
// until the next packet with noise at its level; without a generator the
// span is silence. A stream may also begin with comfort noise.
func TestComfortNoise(t *testing.T) {
	run := func(g *cng.Generator) []int16 {
		var out []int16
		tr := assemble.New(assemble.Config{PayloadType: 0, Decode: func(dst []int16, p []byte) []int16 {
			for range p {
				dst = append(dst, 1000)
			}
			return dst
		}, Out: func(s []int16) { out = append(out, s...) }, ComfortNoise: g, CNPayloadTypes: []uint8{13}})
		tr.Add(1, 0, 13, []byte{40})         // noise first: 160 ticks until packet 2
		tr.Add(2, 160, 0, make([]byte, 160)) // speech
		tr.Add(3, 320, 13, []byte{40})       // 400 ticks of noise
		tr.Add(4, 720, 13, []byte{60})       // then 400 more, 20 dB quieter
		tr.Add(5, 1120, 0, make([]byte, 160))
		// Comfort noise is counted in its own line, played or silent.
		if rep := tr.Close(); rep.GetPacketsInRecording() != 2 || rep.GetComfortNoise() != 3 || rep.GetPacketsCaptured() != 5 {
			t.Fatalf("report %v", rep)
		}
		return out
	}
	silent := run(nil)
	if len(silent) != 160+800+160 || silent[0] != 1000 || silent[200] != 0 || silent[960] != 1000 {
		t.Fatalf("without comfort noise: %d samples", len(silent))
	}
	noisy := run(cng.New(1))
	if len(noisy) != 160+160+800+160 {
		t.Fatalf("with comfort noise: %d samples, want %d", len(noisy), 1280)
	}
	// Each span has the level of the packet that began it.
	for _, span := range [][3]int{{0, 160, 40}, {320, 720, 40}, {720, 1120, 60}} {
		var e float64
		for _, v := range noisy[span[0]:span[1]] {
			e += float64(v) * float64(v)
		}
		want := 32124 * math.Pow(10, -float64(span[2])/20)
		if rms := math.Sqrt(e / float64(span[1]-span[0])); math.Abs(20*math.Log10(rms/want)) > 2 {
			t.Fatalf("noise %v: RMS %.1f, want %.1f", span, rms, want)
		}
	}
	if noisy[160] != 1000 || noisy[1120] != 1000 {
		t.Fatal("speech moved")
	}
}

// TestEveryPacketCountedOnce: each packet Add takes lands in exactly one
// line of the report (recorded, event, comfort noise, duplicate, late, not
// decodable), and audio of a payload type no decoder takes is counted as
// not decodable, by type, never silently dropped.
func TestEveryPacketCountedOnce(t *testing.T) {
	var out []int16
	tr := assemble.New(assemble.Config{StreamID: "s", Decoders: map[uint8]assemble.Decoder{0: g711.DecodeUlaw}, Window: 2,
		Out: func(s []int16) { out = append(out, s...) }, CNPayloadTypes: []uint8{13},
		IsEvent: func(pt uint8, n int) bool { return pt == 101 }})
	pcm := make([]byte, 160)
	tr.Add(10, 0, 0, pcm)         // recorded
	tr.Add(11, 160, 8, pcm)       // PCMA: no decoder here
	tr.Add(11, 160, 8, pcm)       // a copy of it
	tr.Add(12, 320, 101, pcm[:4]) // an event
	tr.Add(13, 480, 13, []byte{40})
	tr.Add(14, 640, 0, pcm)
	tr.Add(15, 800, 8, pcm)
	tr.Add(16, 960, 0, pcm)
	tr.Add(17, 1120, 0, pcm)
	tr.Add(12, 320, 0, pcm) // too late: its place has been emitted
	rep := tr.Close()
	lines := rep.GetPacketsInRecording() + rep.GetEvents() + rep.GetComfortNoise() + rep.GetDuplicates() + rep.GetLate() + rep.GetNotDecodable()
	if rep.GetPacketsCaptured() != 10 || lines != 10 {
		t.Fatalf("captured %d, lines add up to %d: %v", rep.GetPacketsCaptured(), lines, rep)
	}
	if rep.GetPacketsInRecording() != 4 || rep.GetNotDecodable() != 2 || rep.GetEvents() != 1 || rep.GetComfortNoise() != 1 ||
		rep.GetDuplicates() != 1 || rep.GetLate() != 1 {
		t.Fatalf("report %v", rep)
	}
	if pts := tr.Undecoded(); len(pts) != 1 || pts[0] != 8 {
		t.Fatalf("undecoded payload types %v", pts)
	}
}
