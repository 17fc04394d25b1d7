package wav_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/processors/internal/wav"
)

func frames(b []byte) [][2]int16 {
	out := make([][2]int16, len(b)/4)
	for i := range out {
		out[i][0] = int16(binary.LittleEndian.Uint16(b[i*4:]))
		out[i][1] = int16(binary.LittleEndian.Uint16(b[i*4+2:]))
	}
	return out
}

func ramp(n int, base int16) []int16 {
	s := make([]int16, n)
	for i := range s {
		s[i] = base + int16(i)
	}
	return s
}

func TestMixerAlignsByArrival(t *testing.T) {
	var buf bytes.Buffer
	t0 := time.Unix(100, 0)
	m := wav.NewMixer(&buf, 8000, t0, time.Second)
	// Left starts at t0; right 10 ms (80 samples) later.
	m.Start(0, t0)
	if err := m.Write(0, ramp(160, 1)); err != nil {
		t.Fatal(err)
	}
	m.Start(1, t0.Add(10*time.Millisecond))
	if err := m.Write(1, ramp(160, 1000)); err != nil {
		t.Fatal(err)
	}
	n, err := m.Close()
	if err != nil || n != 240 {
		t.Fatalf("Close = %d, %v; want 240 frames", n, err)
	}
	f := frames(buf.Bytes())
	if f[0] != [2]int16{1, 0} || f[79] != [2]int16{80, 0} || f[80] != [2]int16{81, 1000} || f[239] != [2]int16{0, 1159} {
		t.Fatalf("frames 0,79,80,239 = %v %v %v %v", f[0], f[79], f[80], f[239])
	}
}

// A one-way call: the silent channel never sends, so the mixer must not
// buffer the talking one beyond maxLag.
func TestMixerOneWayBoundsMemory(t *testing.T) {
	var buf bytes.Buffer
	m := wav.NewMixer(&buf, 8000, time.Unix(0, 0), 100*time.Millisecond)
	m.Start(1, time.Unix(0, 0))
	for i := range 500 { // 10 s
		if err := m.Write(1, ramp(160, 0)); err != nil {
			t.Fatal(err)
		}
		// At most maxLag (800 samples) plus one output buffer stay queued.
		if given, written := (i+1)*160, buf.Len()/4; written < given-800-1024 {
			t.Fatalf("after %d samples only %d frames written: the mixer is buffering", given, written)
		}
	}
	n, _ := m.Close()
	if n != 500*160 {
		t.Fatalf("%d frames, want %d", n, 500*160)
	}
	for _, fr := range frames(buf.Bytes()) {
		if fr[0] != 0 {
			t.Fatal("silent channel has sound")
		}
	}
}

// Media that came four times faster than it plays (a replay, an SRC
// catching up) arrives in batches of 4 s of audio per channel, taking
// turns: neither channel is silent, and neither may be padded while the
// other's next batch, not late by its arrival, is still to come.
func TestMixerMediaFasterThanRealTime(t *testing.T) {
	var buf bytes.Buffer
	t0 := time.Unix(0, 0)
	m := wav.NewMixer(&buf, 8000, t0, 2*time.Second)
	const batch = 4 * 8000 // 4 s of samples, arriving over 1 s
	for i := range 10 {
		at := t0.Add(time.Duration(i) * time.Second)
		for c := range 2 {
			if i == 0 {
				m.Start(c, at)
			}
			m.Arrived(at)
			if err := m.Write(c, ramp(batch, int16(1000*c+1))); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := m.Close()
	if err != nil || n != 10*batch {
		t.Fatalf("%d frames, %v; want %d: silence was inserted", n, err, 10*batch)
	}
	for i, f := range frames(buf.Bytes()) {
		if want := [2]int16{1 + int16(i%batch), 1001 + int16(i%batch)}; f != want {
			t.Fatalf("frame %d = %v, want %v", i, f, want)
		}
	}
}

func TestHeader(t *testing.T) {
	h := wav.Header(2, 8000, 32000)
	if string(h[0:4]) != "RIFF" || string(h[8:16]) != "WAVEfmt " || binary.LittleEndian.Uint32(h[4:]) != 36+32000 ||
		binary.LittleEndian.Uint16(h[22:]) != 2 || binary.LittleEndian.Uint32(h[28:]) != 32000 || binary.LittleEndian.Uint32(h[40:]) != 32000 {
		t.Fatalf("header % x", h)
	}
}

// TestHeaderFields checks every field of the canonical 44-byte header
// against its definition (RIFF WAVE, fmt chunk of PCM).
func TestHeaderFields(t *testing.T) {
	h := wav.Header(2, 8000, 1000)
	le16 := func(o int) int { return int(binary.LittleEndian.Uint16(h[o:])) }
	le32 := func(o int) int { return int(binary.LittleEndian.Uint32(h[o:])) }
	for _, f := range []struct {
		name      string
		got, want int
	}{
		{"RIFF size", le32(4), 1036}, {"fmt size", le32(16), 16}, {"format", le16(20), 1}, {"channels", le16(22), 2},
		{"sample rate", le32(24), 8000}, {"byte rate", le32(28), 32000}, {"block align", le16(32), 4},
		{"bits per sample", le16(34), 16}, {"data size", le32(40), 1000},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	if string(h[0:4]) != "RIFF" || string(h[8:16]) != "WAVEfmt " || string(h[36:40]) != "data" {
		t.Errorf("chunk ids: %q", h[:])
	}
}
