// Package cng generates comfort noise from RFC 3389 payloads (SID frames):
// what a receiving phone plays while the sender is silent and sends only
// a description of its background noise. The recording then holds what
// the listener heard, as it does for G.729 Annex B, whose decoder
// generates its own comfort noise.
//
// A payload is a noise level in -dBov (RFC 3389 section 3.1; 0 dBov is a
// full-scale µ-law square wave, ±8031 of 8159, so ±32124 in 16-bit PCM)
// and optionally reflection coefficients of an all-pole model of the
// noise's spectrum (section 3.2), one octet each. White Gaussian noise is
// shaped by that model and scaled to the level.
//
// The noise is pseudo-random (math/rand/v2's PCG, normal deviates) with a
// fixed seed per generator, so processing the same media twice gives the
// same recording, byte for byte.
package cng

import (
	"errors"
	"math"
	"math/rand/v2"
)

// MaxOrder is the highest model order used; RFC 3389 leaves it open, and
// further coefficients are ignored (section 3: "the decoder may reduce the
// model order").
const MaxOrder = 12

// fullScale is the RMS of 0 dBov in 16-bit PCM.
const fullScale = 32124.0

// ErrEmpty is returned for a payload without its noise-level octet.
var ErrEmpty = errors.New("cng: empty comfort-noise payload")

// Generator turns the current SID parameters into noise. The zero value is
// silent until Set; it is not safe for concurrent use.
type Generator struct {
	rng   *rand.Rand
	gain  float64           // excitation standard deviation
	a     [MaxOrder]float64 // direct-form predictor: y[n] = e[n] - sum a[j] y[n-1-j]
	order int
	mem   [MaxOrder]float64 // past outputs, newest first
}

// New returns a generator whose noise sequence starts from seed.
func New(seed uint64) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(seed, pcgStream))}
}

// pcgStream is the second PCG seed word, the same for every generator.
const pcgStream = 0x636e67 // "cng"

// Set takes the parameters of one comfort-noise payload.
func (g *Generator) Set(payload []byte) error {
	if len(payload) == 0 {
		return ErrEmpty
	}
	level := float64(payload[0] & 0x7f) // -dBov; the top bit is unused
	rms := fullScale * math.Pow(10, -level/20)
	// Reflection coefficients, quantised uniformly: k = (q - 127) / 128.
	var k [MaxOrder]float64
	order := min(len(payload)-1, MaxOrder)
	energy := 1.0 // prediction error power relative to the output's
	for i := range order {
		k[i] = max(-0.99, min(0.99, (float64(payload[1+i])-127)/128)) // keep the filter stable
		energy *= 1 - k[i]*k[i]
	}
	// Step-up recursion from reflection to direct-form coefficients.
	var a, prev [MaxOrder]float64
	for i := range order {
		prev = a
		a[i] = k[i]
		for j := range i {
			a[j] = prev[j] + k[i]*prev[i-1-j]
		}
	}
	g.a, g.order = a, order
	g.gain = rms * math.Sqrt(energy)
	if g.rng == nil { // the zero value
		g.rng = rand.New(rand.NewPCG(0, pcgStream))
	}
	return nil
}

// Append appends n samples of noise to dst.
func (g *Generator) Append(dst []int16, n int) []int16 {
	if g.rng == nil { // the zero value before Set: silence
		for range n {
			dst = append(dst, 0)
		}
		return dst
	}
	for range n {
		y := g.gain * g.rng.NormFloat64()
		for j := range g.order {
			y -= g.a[j] * g.mem[j]
		}
		if g.order > 0 {
			copy(g.mem[1:g.order], g.mem[:g.order-1])
			g.mem[0] = y
		}
		dst = append(dst, int16(max(-32768, min(32767, math.Round(y)))))
	}
	return dst
}
