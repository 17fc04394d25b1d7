package ingest

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pion/rtcp"

	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// rtcpQuality sums up what RTCP reception reports said about one source:
// call-quality metadata that explains gaps and choppy audio.
type rtcpQuality struct {
	reports     int
	maxFraction float64 // of packets lost, per report interval
	lost        int64   // cumulative, as last reported
	maxJitter   uint32  // RTP timestamp units
}

// rtcpOf reads an RTCP packet of stream s's session, decrypting SRTCP
// with the stream's key (forged and replayed packets are dropped and
// counted, as for SRTP).
func (in *pcapIngest) rtcpOf(s *stream, b []byte) {
	if s.srtp != nil {
		plain, err := s.srtp.DecryptRTCP(b)
		if errors.Is(err, srtpdec.ErrReplay) {
			in.report.SRTPReplayed++
			return
		}
		if errors.Is(err, srtpdec.ErrAuth) {
			in.report.SRTPAuthFailures++
			in.report.LastSRTPError = fmt.Sprintf("SRTCP: %v", err)
			return
		}
		if err != nil { // too short to be SRTCP (an unprotected keepalive): malformed, not forged
			in.report.BadRTCP++
			in.report.LastRTCPError = err.Error()
			return
		}
		b = plain
	}
	in.rtcp(s.call, b)
}

// rtcp reads one (compound) RTCP packet of call c.
func (in *pcapIngest) rtcp(c *call, b []byte) {
	pkts, err := rtcp.Unmarshal(b)
	if err != nil {
		in.report.BadRTCP++
		in.report.LastRTCPError = err.Error()
		return
	}
	in.report.RTCPPackets++
	for _, p := range pkts {
		var rrs []rtcp.ReceptionReport
		switch r := p.(type) {
		case *rtcp.SenderReport:
			rrs = r.Reports
		case *rtcp.ReceiverReport:
			rrs = r.Reports
		}
		for _, rr := range rrs {
			if c.quality == nil {
				c.quality = map[uint32]*rtcpQuality{}
			}
			q := c.quality[rr.SSRC]
			if q == nil {
				q = &rtcpQuality{}
				c.quality[rr.SSRC] = q
			}
			q.reports++
			q.maxFraction = max(q.maxFraction, float64(rr.FractionLost)/256)
			q.lost = int64(rr.TotalLost)
			q.maxJitter = max(q.maxJitter, rr.Jitter)
		}
	}
}

// qualityScores turns the call's RTCP summaries into metadata scores,
// named by the source they describe. Jitter is in milliseconds at 8 kHz.
func qualityScores(qs map[uint32]*rtcpQuality) []*verbatimv1.Score {
	ssrcs := make([]uint32, 0, len(qs))
	for s := range qs {
		ssrcs = append(ssrcs, s)
	}
	slices.Sort(ssrcs)
	var out []*verbatimv1.Score
	for _, s := range ssrcs {
		q, name := qs[s], fmt.Sprintf("rtcp.ssrc.0x%08x.", s)
		out = append(out,
			&verbatimv1.Score{Name: name + "reports", Value: float64(q.reports)},
			&verbatimv1.Score{Name: name + "loss_fraction_max", Value: q.maxFraction, Max: 1},
			&verbatimv1.Score{Name: name + "packets_lost", Value: float64(q.lost)},
			&verbatimv1.Score{Name: name + "jitter_max_ms", Value: float64(q.maxJitter) / 8},
		)
	}
	return out
}
