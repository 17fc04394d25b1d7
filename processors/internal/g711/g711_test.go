package g711_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors/internal/g711"
)

// pcmDigest decodes every RTP payload of one SSRC in a capture and returns
// the SHA-256 of the s16le samples, the MANIFEST's "pcm" digest.
func pcmDigest(t *testing.T, file string, ssrc uint32, decode func([]int16, []byte) []int16) string {
	t.Helper()
	h := sha256.New()
	var samples []int16
	stacktest.EachRTP(t, file, ssrc, func(pkt *rtp.Packet) {
		samples = decode(samples[:0], pkt.Payload)
		if err := binary.Write(h, binary.LittleEndian, samples); err != nil {
			t.Fatal(err)
		}
	})
	return hex.EncodeToString(h.Sum(nil))
}

// The digests are the MANIFEST's (python audioop, the ITU-T tables).
func TestManifestDigests(t *testing.T) {
	for _, c := range []struct {
		file   string
		ssrc   uint32
		decode func([]int16, []byte) []int16
		want   string
	}{
		{"pcap/wireshark_sip-rtp-g711.pcap", 0x343DA99B, g711.DecodeUlaw, "74b16195a4ab422b255a60446cee37540d289a5fbdbc863a48906b893a1db899"},
		{"pcap/wireshark_sip-rtp-g711.pcap", 0x343FFA34, g711.DecodeAlaw, "98822cb3e5957db5a13c85a950123cf89b0b7aee6a0f5b5e39d0e462b320c3d2"},
		{"pcap/sipp_g711a.pcap", 0xDEE0EE8F, g711.DecodeAlaw, "dcdd5c87686c3566fcb8e5a04797c879b2168c9e0f790e6c8ac2ad3e1f77bb3e"},
	} {
		if got := pcmDigest(t, c.file, c.ssrc, c.decode); got != c.want {
			t.Errorf("%s SSRC %08X: pcm digest %s, want %s", c.file, c.ssrc, got, c.want)
		}
	}
}

func TestSilence(t *testing.T) {
	if s := g711.DecodeUlaw(nil, []byte{g711.SilenceUlaw}); s[0] != 0 {
		t.Fatalf("mu-law silence decodes to %d", s[0])
	}
	if s := g711.DecodeAlaw(nil, []byte{g711.SilenceAlaw}); s[0] != 8 {
		t.Fatalf("A-law silence decodes to %d, want 8", s[0])
	}
}

func BenchmarkDecodeUlaw(b *testing.B) {
	payload := make([]byte, 160)
	dst := make([]int16, 0, 160)
	b.SetBytes(160)
	b.ReportAllocs()
	for b.Loop() {
		dst = g711.DecodeUlaw(dst[:0], payload)
	}
}
