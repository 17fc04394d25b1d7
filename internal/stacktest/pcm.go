package stacktest

import (
	"encoding/binary"
	"os"
	"testing"
)

// ReadPCM reads a raw file of 16-bit little-endian samples, as sox and
// ffmpeg write them for the reference decodes tests compare with.
func ReadPCM(t testing.TB, path string) []int16 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := make([]int16, len(b)/2)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return s
}
