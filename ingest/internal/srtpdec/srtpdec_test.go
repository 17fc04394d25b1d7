package srtpdec_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"

	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

type vector struct {
	ID, Kind, Suite       string
	MasterKey             string `json:"master_key"`
	MasterSalt            string `json:"master_salt"`
	PlaintextRTP          string `json:"plaintext_rtp"`
	SRTPPacket            string `json:"srtp_packet"`
	PlaintextRTCP         string `json:"plaintext_rtcp"`
	SRTCPPacket           string `json:"srtcp_packet"`
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
	n, rtcpN := 0, 0
	for _, v := range f.Vectors {
		if v.Kind == "srtcp_packet" && v.MasterKey != "" {
			rtcpN++
			d, err := srtpdec.New(v.Suite, append(unhex(t, v.MasterKey), unhex(t, v.MasterSalt)...))
			if err != nil {
				t.Fatalf("%s: %v", v.ID, err)
			}
			pkt := unhex(t, v.SRTCPPacket)
			forged := bytes.Clone(pkt)
			forged[10] ^= 1
			if _, err := d.DecryptRTCP(forged); !errors.Is(err, srtpdec.ErrAuth) {
				t.Fatalf("%s: forged SRTCP: %v", v.ID, err)
			}
			got, err := d.DecryptRTCP(pkt)
			if err != nil || !bytes.Equal(got, unhex(t, v.PlaintextRTCP)) {
				t.Fatalf("%s: got %x, %v", v.ID, got, err)
			}
			if _, err := d.DecryptRTCP(pkt); !errors.Is(err, srtpdec.ErrReplay) {
				t.Fatalf("%s: replayed SRTCP: %v", v.ID, err)
			}
			continue
		}
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
	if n != 3 || rtcpN != 2 {
		t.Fatalf("%d SRTP and %d SRTCP packet vectors, want 3 and 2", n, rtcpN)
	}
	if _, err := srtpdec.New("AES_CM_128_HMAC_SHA1_80", make([]byte, 16)); err == nil {
		t.Fatal("a short key was accepted")
	}
	if _, err := srtpdec.New("F8_128_HMAC_SHA1_80", make([]byte, 30)); err == nil {
		t.Fatal("an unsupported suite was accepted")
	}
}

// BenchmarkDecryptAtScale decrypts 160-byte G.711 packets round-robin
// over many concurrent streams (each its own key and replay window), as
// on a busy capture port: the per-stream state no longer fits in cache.
// Each stream has 50 packets, so run at most streams*50 iterations
// (-benchtime 200000x for 4,000; 500000x for 10,000).
func BenchmarkDecryptAtScale(b *testing.B) {
	for _, streams := range []int{1, 10000} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			const perStream = 50
			if b.N > streams*perStream {
				b.Skipf("b.N %d > %d packets prepared: use -benchtime %dx", b.N, streams*perStream, streams*perStream)
			}
			decs := make([]*srtpdec.Decryptor, streams)
			pkts := make([][][]byte, streams)
			for s := range streams {
				key := make([]byte, 30)
				binary.BigEndian.PutUint32(key, uint32(s))
				enc, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
				if err != nil {
					b.Fatal(err)
				}
				if decs[s], err = srtpdec.New("AES_CM_128_HMAC_SHA1_80", key); err != nil {
					b.Fatal(err)
				}
				for i := range perStream {
					p := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i), Timestamp: uint32(i) * 160, SSRC: uint32(s)},
						Payload: make([]byte, 160)}
					plain, _ := p.Marshal()
					out, err := enc.EncryptRTP(nil, plain, nil)
					if err != nil {
						b.Fatal(err)
					}
					pkts[s] = append(pkts[s], out)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := i % streams
				if _, err := decs[s].Decrypt(pkts[s][i/streams]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDecrypt: arbitrary packets never crash the decryptor and never
// authenticate (the key is not known to the fuzzer's inputs).
func FuzzDecrypt(f *testing.F) {
	f.Add(unhexF("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d, err := srtpdec.New("AES_CM_128_HMAC_SHA1_80", bytes.Repeat([]byte{7}, 30))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := d.Decrypt(pkt); err == nil {
			t.Fatalf("a packet the fuzzer made authenticated: %x", out)
		}
	})
}

func unhexF(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}
