package g722_test

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors/internal/g722"
)

// payloads exports one stream's RTP payloads, in capture order, with
// tshark.
func payloads(t *testing.T, ssrc uint32) [][]byte {
	t.Helper()
	capture := stacktest.SharedTestdata(t, "pcap/miarec_siprec_dual_channel_udp.pcap")
	out, err := exec.Command("tshark", "-r", capture, "-o", "rtp.heuristic_rtp:TRUE",
		"-Y", fmt.Sprintf("rtp.ssrc == 0x%08x", ssrc), "-T", "fields", "-e", "rtp.payload").Output()
	if err != nil {
		t.Fatalf("tshark (make test installs it): %v", err)
	}
	var ps [][]byte
	for _, line := range strings.Fields(string(out)) {
		b, err := hex.DecodeString(strings.ReplaceAll(line, ":", ""))
		if err != nil {
			t.Fatalf("tshark payload %q: %v", line, err)
		}
		ps = append(ps, b)
	}
	return ps
}

// ffmpeg decodes raw G.722 with ffmpeg's decoder, a reference written by
// other people.
func ffmpeg(t *testing.T, raw []byte) []int16 {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.g722"), filepath.Join(dir, "out.raw")
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-f", "g722", "-i", in, "-f", "s16le", "-acodec", "pcm_s16le", out).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg (make test installs it): %v: %s", err, b)
	}
	return stacktest.ReadPCM(t, out)
}

// TestDecodeMatchesFFmpeg decodes both G.722 streams of a real SIPREC
// capture packet by packet, as the recorder does, and compares every
// sample with ffmpeg's decoder given the same octets in one piece.
func TestDecodeMatchesFFmpeg(t *testing.T) {
	stacktest.Env(t, "VERBATIM_INTEGRATION") // make test, with tshark and ffmpeg
	for _, ssrc := range []uint32{0x19473744, 0x04AD37B4} {
		t.Run(fmt.Sprintf("%08x", ssrc), func(t *testing.T) {
			ps := payloads(t, ssrc)
			var raw []byte
			d := g722.New()
			var got []int16
			for _, p := range ps {
				raw = append(raw, p...)
				got = d.Decode(got, p)
			}
			want := ffmpeg(t, raw)
			if len(got) != 2*len(raw) || len(want) != len(got) {
				t.Fatalf("%d octets decoded to %d samples; ffmpeg gave %d", len(raw), len(got), len(want))
			}
			loud := 0
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("sample %d of %d: %d, ffmpeg %d", i, len(got), got[i], want[i])
				}
				if got[i] > 1000 || got[i] < -1000 {
					loud++
				}
			}
			if loud < 1000 {
				t.Fatalf("only %d of %d samples above -30 dBFS: silence proves nothing", loud, len(got))
			}
			t.Logf("%d packets, %d samples at 16 kHz equal ffmpeg's (%d loud)", len(ps), len(got), loud)
		})
	}
}

// TestReset: a decoder reset for a new source decodes as a new one does.
func TestReset(t *testing.T) {
	p := []byte{0x12, 0xf3, 0x80, 0x7f, 0x00, 0xff, 0x55, 0xaa}
	d := g722.New()
	first := d.Decode(nil, p)
	d.Decode(nil, p)
	d.Reset()
	if again := d.Decode(nil, p); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("after Reset %v, new decoder %v", again, first)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x00, 0xff, 0x3f, 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if got := g722.New().Decode(nil, b); len(got) != g722.SamplesPerOctet*len(b) {
			t.Fatalf("%d octets gave %d samples", len(b), len(got))
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	p := make([]byte, 160) // 20 ms
	for i := range p {
		p[i] = byte(i * 37)
	}
	d := g722.New()
	dst := make([]int16, 0, 320)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		dst = d.Decode(dst[:0], p)
	}
}
