//go:build bcg729 && cgo

package processors_test

import (
	"math"
	"testing"
)

// TestProcessG729: built with libbcg729, the G.729A call is decoded. It
// plays the same prompt as the G.711 sample's µ-law call, so the two
// recordings must match closely once aligned (normalised correlation),
// which a wrong decode would not.
func TestProcessG729(t *testing.T) {
	audio := func(file string) []int16 {
		p := kfakePipeline(t)
		p.ingest(file)
		p.process(nil)
		recs, _ := p.recordings()
		for _, rs := range recs {
			l, r := channels(t, rs[0].wav)
			if isSilent(l) {
				return r
			}
			return l
		}
		t.Fatalf("%s: nothing recorded", file)
		return nil
	}
	g729 := audio("pcap/wireshark_sip-rtp-g729a.pcap")
	ulaw := audio("pcap/wireshark_sip-rtp-g711.pcap") // first call: PCMU
	if len(g729) < 425*160 {
		t.Fatalf("G.729: %d samples, want 425 packets of 20 ms", len(g729))
	}
	// Best normalised correlation over lags of ±50 ms, on 2 s of audio.
	n := 16000
	best := 0.0
	for lag := -400; lag <= 400; lag++ {
		var xy, xx, yy float64
		for i := 4000; i < 4000+n; i++ {
			x, y := float64(g729[i]), float64(ulaw[i+lag])
			xy, xx, yy = xy+x*y, xx+x*x, yy+y*y
		}
		if c := xy / math.Sqrt(xx*yy); c > best {
			best = c
		}
	}
	t.Logf("G.729 against µ-law of the same prompt: correlation %.3f", best)
	if best < 0.6 { // 0.80 with Debian 12's libbcg729 1.1.1; a wrong decode is near 0
		t.Fatalf("correlation %.3f: the G.729 decode does not sound like the prompt", best)
	}
}
