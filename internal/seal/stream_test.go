package seal_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/verbatimrec/verbatim/internal/seal"
)

func sealStream(t testing.TB, key, aad, pt []byte) []byte {
	var out bytes.Buffer
	w, err := seal.NewStreamWriter(&out, key, aad)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes cross chunk boundaries.
	for p := pt; len(p) > 0; {
		n := min(len(p), 7919)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ps, cs, pn, cn := w.Sums()
	if want := sha256.Sum256(pt); !bytes.Equal(ps, want[:]) || pn != int64(len(pt)) {
		t.Fatal("plaintext digest or size wrong")
	}
	if want := sha256.Sum256(out.Bytes()); !bytes.Equal(cs, want[:]) || cn != int64(out.Len()) {
		t.Fatal("ciphertext digest or size wrong")
	}
	if seal.SealedSize(int64(len(pt))) != int64(out.Len()) {
		t.Fatalf("SealedSize(%d) = %d, sealed %d", len(pt), seal.SealedSize(int64(len(pt))), out.Len())
	}
	return out.Bytes()
}

func openStream(key, aad, ct []byte) ([]byte, error) {
	r, err := seal.NewStreamReader(bytes.NewReader(ct), key, aad)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestStreamRoundTrip(t *testing.T) {
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	aad := []byte("demo\x00demo/2026/11/22/call/rec")
	for _, n := range []int{0, 1, seal.ChunkSize - 1, seal.ChunkSize, seal.ChunkSize + 1, 3*seal.ChunkSize + 12345} {
		pt := make([]byte, n)
		rand.Read(pt)
		ct := sealStream(t, key, aad, pt)
		got, err := openStream(key, aad, ct)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: round trip failed: %v", n, err)
		}
	}
}

func TestStreamTamper(t *testing.T) {
	key := make([]byte, seal.KeySize)
	rand.Read(key)
	aad := []byte("ctx")
	pt := make([]byte, 2*seal.ChunkSize+100)
	ct := sealStream(t, key, aad, pt)
	chunk := seal.ChunkSize + 16
	hdr := len(ct) - (2*chunk + 100 + 16)

	cases := map[string][]byte{
		"truncated at a chunk boundary": ct[:hdr+2*chunk],
		"truncated mid chunk":           ct[:len(ct)-5],
		"bit flipped":                   func() []byte { c := bytes.Clone(ct); c[hdr+10] ^= 1; return c }(),
		"chunks swapped": func() []byte {
			c := bytes.Clone(ct)
			copy(c[hdr:], ct[hdr+chunk:hdr+2*chunk])
			copy(c[hdr+chunk:], ct[hdr:hdr+chunk])
			return c
		}(),
	}
	for name, c := range cases {
		if _, err := openStream(key, aad, c); !errors.Is(err, seal.ErrStreamCorrupt) {
			t.Errorf("%s: got %v, want ErrStreamCorrupt", name, err)
		}
	}
	if _, err := openStream(key, []byte("other"), ct); !errors.Is(err, seal.ErrStreamCorrupt) {
		t.Errorf("wrong aad: got %v", err)
	}
}

// BenchmarkStreamWrite seals a recording in 4 KB writes.
func BenchmarkStreamWrite(b *testing.B) {
	key := make([]byte, seal.KeySize)
	buf := make([]byte, 4096)
	w, _ := seal.NewStreamWriter(io.Discard, key, nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
