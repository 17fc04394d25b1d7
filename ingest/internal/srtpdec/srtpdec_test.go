package srtpdec_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

type vector struct {
	ID, Kind, Suite       string
	MasterKey             string `json:"master_key"`
	MasterSalt            string `json:"master_salt"`
	PlaintextRTP          string `json:"plaintext_rtp"`
	SRTPPacket            string `json:"srtp_packet"`
	IndependentlyVerified any    `json:"independently_verified"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKnownAnswers decrypts the MANIFEST's SRTP packet vectors (libsrtp's
// srtp_validate for AES-CM-128, AES-256-CM and AES-128-GCM), then checks
// that a forged and a replayed packet are refused.
func TestKnownAnswers(t *testing.T) {
	b, err := os.ReadFile(stacktest.SharedTestdata(t, "srtp/srtp_test_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range f.Vectors {
		if v.Kind != "srtp_packet" {
			continue
		}
		n++
		key := append(unhex(t, v.MasterKey), unhex(t, v.MasterSalt)...)
		d, err := srtpdec.New(v.Suite, key)
		if err != nil {
			t.Fatalf("%s: %v", v.ID, err)
		}
		pkt := unhex(t, v.SRTPPacket)
		forged := bytes.Clone(pkt)
		forged[len(forged)-1] ^= 1
		if _, err := d.Decrypt(forged); !errors.Is(err, srtpdec.ErrAuth) {
			t.Fatalf("%s: forged packet: %v", v.ID, err)
		}
		got, err := d.Decrypt(pkt)
		if err != nil || !bytes.Equal(got, unhex(t, v.PlaintextRTP)) {
			t.Fatalf("%s: got %x, %v", v.ID, got, err)
		}
		if _, err := d.Decrypt(pkt); !errors.Is(err, srtpdec.ErrReplay) {
			t.Fatalf("%s: replayed packet: %v", v.ID, err)
		}
	}
	if n != 3 {
		t.Fatalf("%d packet vectors, want 3", n)
	}
	if _, err := srtpdec.New("AES_CM_128_HMAC_SHA1_80", make([]byte, 16)); err == nil {
		t.Fatal("a short key was accepted")
	}
	if _, err := srtpdec.New("F8_128_HMAC_SHA1_80", make([]byte, 30)); err == nil {
		t.Fatal("an unsupported suite was accepted")
	}
}
