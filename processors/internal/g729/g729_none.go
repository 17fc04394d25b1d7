//go:build !bcg729 || !cgo

package g729

// Available reports whether this build can decode G.729.
const Available = false

// Decoder is unavailable in this build.
type Decoder struct{}

// New returns a decoder that decodes nothing; check Available first.
func New() *Decoder { return &Decoder{} }

// Decode returns dst unchanged.
func (d *Decoder) Decode(dst []int16, _ []byte) []int16 { return dst }

// Close does nothing.
func (d *Decoder) Close() {}
