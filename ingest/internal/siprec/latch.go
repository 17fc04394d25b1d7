package siprec

import "net/netip"

// Latch decides which packets arriving on one of the SRS's media ports are
// the SRC's: those from the address its SDP negotiated. The first packet
// from that address latches its source (port included: behind NAT the
// port may differ from the SDP's), and from then on only that source is
// accepted; the latch is never re-learned from other packets, so a
// stranger cannot take over the stream (RTP Bleed). Everything else is
// dropped and counted. Not safe for concurrent use.
type Latch struct {
	want    netip.Addr
	latched netip.AddrPort
	// Strays counts the packets refused.
	Strays uint64
}

// NewLatch returns a latch for media the SRC announced at sdp.
func NewLatch(sdp netip.AddrPort) *Latch { return &Latch{want: sdp.Addr().Unmap()} }

// Accept reports whether a packet from src is the SRC's.
func (l *Latch) Accept(src netip.AddrPort) bool {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	switch {
	case l.latched.IsValid():
		if src == l.latched {
			return true
		}
	case l.want.IsValid() && src.Addr() == l.want:
		l.latched = src
		return true
	}
	l.Strays++
	return false
}

// Source returns the latched source, if any.
func (l *Latch) Source() (netip.AddrPort, bool) { return l.latched, l.latched.IsValid() }
