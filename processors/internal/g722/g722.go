// Package g722 decodes ITU-T G.722 (7 kHz wideband ADPCM) at 64 kbit/s,
// the mode RTP carries (RFC 3551: payload type 9, one octet per pair of
// 16 kHz samples, RTP clock 8000 for historical reasons).
//
// The decoder follows the block diagram of G.722 section 4 (lower and
// higher sub-band ADPCM decoders, the adaptive predictors of block 4, and
// the 24-tap receive QMF) in integer arithmetic, so its output matches
// other implementations of the recommendation sample for sample; the
// tests check it against ffmpeg's decoder on a real capture.
package g722

// SamplesPerOctet is the number of 16 kHz samples one G.722 octet decodes
// to.
const SamplesPerOctet = 2

// band is the state of one sub-band's adaptive predictor (block 4) and
// scale factor (block 3).
type band struct {
	s   int    // predicted signal
	sp  int    // pole section of the prediction
	sz  int    // zero section of the prediction
	r   [3]int // reconstructed signals, r[0] unused
	a   [3]int // pole coefficients, a[0] unused
	p   [3]int // partial reconstructed signals, p[0] unused
	d   [7]int // quantised differences, d[0] the newest
	b   [7]int // zero coefficients, b[0] unused
	nb  int    // logarithmic scale factor
	det int    // scale factor
}

// Decoder decodes one G.722 stream. Its state carries from packet to
// packet, so a stream needs its own Decoder. The zero value is not ready:
// use New.
type Decoder struct {
	x    [24]int // receive QMF delay line
	band [2]band // lower, higher
}

// New returns a Decoder in the reset state of the recommendation.
func New() *Decoder {
	d := &Decoder{}
	d.Reset()
	return d
}

// Reset returns the decoder to its initial state (a new source).
func (d *Decoder) Reset() {
	*d = Decoder{}
	d.band[0].det = 32
	d.band[1].det = 8
}

// Quantiser and adaptation tables of G.722 (tables 6, 7, 9 and 11 of the
// recommendation, in the scaling its block descriptions use).
var (
	// Lower sub-band inverse quantiser, 6-bit codes (64 kbit/s).
	qm6 = [64]int{
		-136, -136, -136, -136, -24808, -21904, -19008, -16704,
		-14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
		-7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
		-3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
		24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
		10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
		4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
		1688, 1360, 1040, 728, 432, 136, -432, -136,
	}
	// Lower sub-band inverse quantiser, 4-bit codes (the predictor's
	// input at every rate).
	qm4 = [16]int{
		0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
		20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
	}
	// Higher sub-band inverse quantiser, 2-bit codes.
	qm2 = [4]int{-7408, -1616, 7408, 1616}
	// Lower sub-band log scale factor multipliers and code map.
	wl   = [8]int{-60, -30, 58, 172, 334, 538, 1198, 3042}
	rl42 = [16]int{0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0}
	// Higher sub-band log scale factor multipliers and code map.
	wh  = [3]int{0, -214, 798}
	rh2 = [4]int{2, 1, 2, 1}
	// Inverse log table of the scale factor (block 3, SCALEL/SCALEH).
	ilb = [32]int{
		2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383,
		2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
		2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371,
		3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
	}
	// Receive QMF coefficients (table 12), half of the symmetric filter.
	qmf = [12]int{3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11}
)

func sat16(v int) int {
	if v > 32767 {
		return 32767
	}
	if v < -32768 {
		return -32768
	}
	return v
}

func clamp(v, lo, hi int) int {
	return max(lo, min(hi, v))
}

// scale computes the linear scale factor from the log one (block 3,
// SCALEL/SCALEH); shift is 8 for the lower band and 10 for the higher.
func (b *band) scale(shift int) {
	i := (b.nb >> 6) & 31
	n := shift - (b.nb >> 11)
	var v int
	if n < 0 {
		v = ilb[i] << -n
	} else {
		v = ilb[i] >> n
	}
	b.det = v << 2
}

// adapt runs block 4 with the quantised difference d: reconstruction,
// pole and zero predictor updates, and the next prediction. The delay
// line shifts (DELAYA) are folded into the updates that read them.
func (b *band) adapt(d int) {
	// RECONS, PARREC
	r0 := sat16(b.s + d)
	p0 := sat16(b.sz + d)
	sg0, sg1, sg2 := p0>>15, b.p[1]>>15, b.p[2]>>15

	// UPPOL2
	wd1 := sat16(b.a[1] << 2)
	wd2 := wd1
	if sg0 == sg1 {
		wd2 = -wd1
	}
	wd2 = min(wd2, 32767)
	wd3 := wd2 >> 7
	if sg0 == sg2 {
		wd3 += 128
	} else {
		wd3 -= 128
	}
	wd3 += (b.a[2] * 32512) >> 15
	a2 := clamp(wd3, -12288, 12288)

	// UPPOL1
	wd1 = -192
	if sg0 == sg1 {
		wd1 = 192
	}
	lim := sat16(15360 - a2)
	a1 := clamp(sat16(wd1+(b.a[1]*32640)>>15), -lim, lim)

	// UPZERO, DELAYA and FILTEZ: each zero coefficient adapts on the sign
	// of its delayed difference before the line shifts, and the zero
	// section predicts from the shifted line.
	step := 128
	if d == 0 {
		step = 0
	}
	dsg := d >> 15
	b.d[0] = d
	sz := 0
	for i := 6; i > 0; i-- {
		w := -step
		if b.d[i]>>15 == dsg {
			w = step
		}
		b.b[i] = sat16(w + (b.b[i]*32640)>>15)
		b.d[i] = b.d[i-1]
		sz += (b.b[i] * sat16(b.d[i]+b.d[i])) >> 15
	}
	b.r[2], b.r[1] = b.r[1], r0
	b.p[2], b.p[1] = b.p[1], p0
	b.a[2], b.a[1] = a2, a1

	// FILTEP
	wd1 = (b.a[1] * sat16(b.r[1]+b.r[1])) >> 15
	wd2 = (b.a[2] * sat16(b.r[2]+b.r[2])) >> 15
	b.sp = sat16(wd1 + wd2)
	b.sz = sat16(sz)

	// PREDIC
	b.s = sat16(b.sp + b.sz)
}

// Decode appends the 16 kHz samples of one payload (two per octet) to dst.
func (d *Decoder) Decode(dst []int16, payload []byte) []int16 {
	lo, hi := &d.band[0], &d.band[1]
	for _, code := range payload {
		ilow := int(code & 0x3f)
		ihigh := int(code>>6) & 0x03

		// Lower sub-band: INVQBL reconstructs the signal from the 6-bit
		// code; the predictor adapts on the 4-bit truncation (INVQAL).
		rlow := clamp(lo.s+(lo.det*qm6[ilow])>>15, -16384, 16383)
		i4 := ilow >> 2
		dlow := (lo.det * qm4[i4]) >> 15
		lo.nb = clamp((lo.nb*127)>>7+wl[rl42[i4]], 0, 18432)
		lo.scale(8)
		lo.adapt(dlow)

		// Higher sub-band.
		dhigh := (hi.det * qm2[ihigh]) >> 15
		rhigh := clamp(dhigh+hi.s, -16384, 16383)
		hi.nb = clamp((hi.nb*127)>>7+wh[rh2[ihigh]], 0, 22528)
		hi.scale(10)
		hi.adapt(dhigh)

		// Receive QMF: two output samples per sub-band pair.
		copy(d.x[:22], d.x[2:])
		d.x[22] = rlow + rhigh
		d.x[23] = rlow - rhigh
		var x1, x2 int
		for i := range 12 {
			x2 += d.x[2*i] * qmf[i]
			x1 += d.x[2*i+1] * qmf[11-i]
		}
		dst = append(dst, int16(sat16(x1>>11)), int16(sat16(x2>>11)))
	}
	return dst
}
