package stacktest

import (
	"bytes"
	"os"
	"testing"

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
	data, err := os.ReadFile(SharedTestdata(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var pkt rtp.Packet
	for p := range gopacket.NewPacketSource(r, r.LinkType()).Packets() {
		udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok || pkt.Unmarshal(udp.Payload) != nil || pkt.Version != 2 || pkt.SSRC != ssrc {
			continue
		}
		fn(&pkt)
	}
}
