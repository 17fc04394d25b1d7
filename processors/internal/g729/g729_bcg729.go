//go:build bcg729 && cgo

package g729

/*
#cgo LDFLAGS: -lbcg729
#include <stdint.h>
#include <bcg729/decoder.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Available reports whether this build can decode G.729.
const Available = true

// Decoder decodes one stream: G.729 keeps state from frame to frame. Not
// safe for concurrent use.
type Decoder struct {
	ctx *C.bcg729DecoderChannelContextStruct
	out [FrameSamples]C.int16_t
}

// New returns a decoder; Close frees it.
func New() *Decoder {
	d := &Decoder{ctx: C.initBcg729DecoderChannel()}
	runtime.SetFinalizer(d, (*Decoder).Close)
	return d
}

// Decode appends the samples of one RTP payload (10-byte frames, possibly
// ending with a 2-byte SID frame) to dst.
func (d *Decoder) Decode(dst []int16, payload []byte) []int16 {
	if d.ctx == nil {
		return dst
	}
	for len(payload) > 0 {
		n, sid := FrameBytes, C.uint8_t(0)
		if len(payload) < FrameBytes {
			n, sid = len(payload), 1 // Annex B silence descriptor
		}
		C.bcg729Decoder(d.ctx, (*C.uint8_t)(unsafe.Pointer(&payload[0])), C.uint8_t(n), 0, sid, 0, &d.out[0])
		for _, s := range d.out {
			dst = append(dst, int16(s))
		}
		payload = payload[n:]
	}
	return dst
}

// Close frees the decoder.
func (d *Decoder) Close() {
	if d.ctx != nil {
		C.closeBcg729DecoderChannel(d.ctx)
		d.ctx = nil
	}
}
