// Package g711 decodes ITU-T G.711 mu-law (PCMU) and A-law (PCMA) to 16-bit
// linear PCM. Decoding is a table lookup per sample into a caller's buffer.
package g711

// The tables are computed once from the G.711 expansion rules and never
// written afterwards.
var (
	ulaw = func() (t [256]int16) {
		for i := range t {
			t[i] = ulawExpand(byte(i))
		}
		return t
	}()
	alaw = func() (t [256]int16) {
		for i := range t {
			t[i] = alawExpand(byte(i))
		}
		return t
	}()
)

func ulawExpand(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func alawExpand(a byte) int16 {
	a ^= 0x55
	t := int(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// DecodeUlaw appends the linear samples of mu-law payload to dst.
func DecodeUlaw(dst []int16, payload []byte) []int16 {
	for _, b := range payload {
		dst = append(dst, ulaw[b])
	}
	return dst
}

// DecodeAlaw appends the linear samples of A-law payload to dst.
func DecodeAlaw(dst []int16, payload []byte) []int16 {
	for _, b := range payload {
		dst = append(dst, alaw[b])
	}
	return dst
}

// SilenceUlaw and SilenceAlaw are the codes of digital silence.
const (
	SilenceUlaw = 0xff
	SilenceAlaw = 0xd5
)
