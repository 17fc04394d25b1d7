package stacktest

import (
	"bytes"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pion/rtp"
)

// EachRTP calls fn, in capture order, for every RTP packet of one SSRC in a
// pcap of ../shared/testdata. It reads the capture with gopacket directly,
// so tests outside ingest can use the samples without importing ingest.
func EachRTP(t testing.TB, rel string, ssrc uint32, fn func(*rtp.Packet)) {
	t.Helper()
	var pkt rtp.Packet
	EachUDP(t, rel, func(_ time.Time, _, _ netip.AddrPort, payload []byte) {
		if pkt.Unmarshal(payload) != nil || pkt.Version != 2 || pkt.SSRC != ssrc {
			return
		}
		fn(&pkt)
	})
}

// EachUDP calls fn, in capture order, for every UDP datagram of a pcap of
// ../shared/testdata, with its capture time and ends.
func EachUDP(t testing.TB, rel string, fn func(at time.Time, src, dst netip.AddrPort, payload []byte)) {
	t.Helper()
	data, err := os.ReadFile(SharedTestdata(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for p := range gopacket.NewPacketSource(r, r.LinkType()).Packets() {
		udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			continue
		}
		var src, dst netip.Addr
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		case *layers.IPv6:
			src, _ = netip.AddrFromSlice(ip.SrcIP)
			dst, _ = netip.AddrFromSlice(ip.DstIP)
		}
		fn(p.Metadata().Timestamp, netip.AddrPortFrom(src, uint16(udp.SrcPort)), netip.AddrPortFrom(dst, uint16(udp.DstPort)), udp.Payload)
	}
}
