// Package g729 decodes G.729 (Annex A and B) through Debian's libbcg729,
// with cgo, when built with the bcg729 tag (`go build -tags bcg729`,
// libbcg729-dev installed). Without it, Available is false and G.729
// streams are kept raw, the recording saying so.
package g729

// FrameBytes is one 10 ms G.729 frame; SIDBytes an Annex B comfort-noise
// frame.
const (
	FrameBytes   = 10
	FrameSamples = 80
	SIDBytes     = 2
)
