package cng_test

import (
	"math"
	"slices"
	"testing"

	"github.com/verbatimrec/verbatim/processors/internal/cng"
)

func stats(s []int16) (rms, r1 float64) {
	var e, c float64
	for i, v := range s {
		e += float64(v) * float64(v)
		if i > 0 {
			c += float64(v) * float64(s[i-1])
		}
	}
	return math.Sqrt(e / float64(len(s))), c / e
}

// TestLevel: the noise has the RMS the level octet gives (RFC 3389: -dBov
// relative to a full-scale µ-law square wave), white without coefficients.
func TestLevel(t *testing.T) {
	for _, level := range []byte{30, 50, 63, 80} {
		g := cng.New(1)
		if err := g.Set([]byte{level}); err != nil {
			t.Fatal(err)
		}
		rms, r1 := stats(g.Append(nil, 16000))
		want := 32124 * math.Pow(10, -float64(level)/20)
		if math.Abs(20*math.Log10(rms/want)) > 0.5 || math.Abs(r1) > 0.05 {
			t.Fatalf("level %d dBov: RMS %.1f (want %.1f), lag-1 correlation %.2f", level, rms, want, r1)
		}
	}
}

// TestSpectrum: reflection coefficients shape the noise (a first
// coefficient near +1 or -1 gives strongly correlated neighbours, low- or
// high-pass) without changing its level.
func TestSpectrum(t *testing.T) {
	want := 32124 * math.Pow(10, -40.0/20)
	var signs []float64
	for _, q := range []byte{127 + 115, 127 - 115} { // k1 = ±0.9
		g := cng.New(7)
		if err := g.Set([]byte{40, q, 127}); err != nil {
			t.Fatal(err)
		}
		rms, r1 := stats(g.Append(nil, 32000))
		if math.Abs(20*math.Log10(rms/want)) > 1 || math.Abs(r1) < 0.8 {
			t.Fatalf("k1 from %d: RMS %.1f (want %.1f), lag-1 correlation %.2f", q, rms, want, r1)
		}
		signs = append(signs, math.Copysign(1, r1))
	}
	if signs[0] == signs[1] {
		t.Fatal("opposite coefficients gave the same spectral tilt")
	}
}

// TestDeterministic: the same seed and payloads give the same samples, so
// reprocessing a call reproduces its recording.
func TestDeterministic(t *testing.T) {
	run := func() []int16 {
		g := cng.New(42)
		_ = g.Set([]byte{60, 140, 100})
		return g.Append(nil, 800)
	}
	if a, b := run(), run(); !slices.Equal(a, b) {
		t.Fatal("two runs differ")
	}
	if err := cng.New(1).Set(nil); err == nil {
		t.Fatal("an empty payload was accepted")
	}
	var g cng.Generator // unset: silent
	if s := g.Append(nil, 10); slices.ContainsFunc(s, func(v int16) bool { return v != 0 }) {
		t.Fatalf("a generator without parameters made %v", s)
	}
}

func BenchmarkAppend(b *testing.B) {
	g := cng.New(1)
	_ = g.Set([]byte{60, 140, 100, 130, 120})
	dst := make([]int16, 0, 160)
	b.ReportAllocs()
	for b.Loop() {
		dst = g.Append(dst[:0], 160)
	}
}
