package processors

import "testing"

// WithoutDecoders makes this build act, until restore is called or the
// test ends, as one without the named decoders ("OPUS", "G729"): the
// recordings an earlier build made.
func WithoutDecoders(t testing.TB, names ...string) (restore func()) {
	prev := withoutDecoders
	withoutDecoders = map[string]bool{}
	for _, n := range names {
		withoutDecoders[n] = true
	}
	restore = func() { withoutDecoders = prev }
	t.Cleanup(restore)
	return restore
}

// AsBeforeMediaEnded makes this build, until restore is called, announce
// recordings as versions before RecordingStored.media_ended and
// processing existed did.
func AsBeforeMediaEnded(t testing.TB) (restore func()) {
	omitMediaEnded = true
	restore = func() { omitMediaEnded = false }
	t.Cleanup(restore)
	return restore
}
