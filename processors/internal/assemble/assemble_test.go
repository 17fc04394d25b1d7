package assemble_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors/internal/assemble"
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
