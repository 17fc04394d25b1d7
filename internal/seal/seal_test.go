package seal_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/verbatimrec/verbatim/internal/seal"
)

func key(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, seal.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := key(t)
	s, err := seal.New("demo", "dk-1", k)
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("sip:alice@example.com")
	m, err := s.Seal(nil, "verbatim.v1.ParticipantIdentity", pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.GetCiphertext(), pt) || m.GetKeyId() != "dk-1" {
		t.Fatalf("sealed value leaks plaintext or lacks key id: %v", m)
	}
	got, err := s.Open(nil, "verbatim.v1.ParticipantIdentity", m)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}

	// The AAD binds tenant, key and type.
	other, _ := seal.New("acme", "dk-1", k)
	if _, err := other.Open(nil, "verbatim.v1.ParticipantIdentity", m); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("open as another tenant: %v, want ErrOpen", err)
	}
	if _, err := s.Open(nil, "verbatim.v1.MetadataPersonal", m); err == nil {
		t.Fatal("opened with the wrong type")
	}
	m.Type = "verbatim.v1.MetadataPersonal"
	if _, err := s.Open(nil, "verbatim.v1.MetadataPersonal", m); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("relabelled type: %v, want ErrOpen", err)
	}
	m.Type = "verbatim.v1.ParticipantIdentity"
	m.Ciphertext[0] ^= 1
	if _, err := s.Open(nil, "verbatim.v1.ParticipantIdentity", m); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("tampered: %v, want ErrOpen", err)
	}
	if _, err := seal.New("demo", "dk", k[:16]); err == nil {
		t.Fatal("short key accepted")
	}
}

// BenchmarkSeal1s seals one second of one G.711 stream (50 packets of 172
// bytes, length-prefixed) as one PacketBatch would.
func BenchmarkSeal1s(b *testing.B) {
	s, _ := seal.New("demo", "dk-1", make([]byte, seal.KeySize))
	pt := make([]byte, 50*174)
	dst := make([]byte, 0, len(pt)+64)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(dst, "verbatim.v1.rtp-packets", pt); err != nil {
			b.Fatal(err)
		}
	}
}
