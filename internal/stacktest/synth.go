package stacktest

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pion/rtp"
)

// Synth builds a pcap capture of UDP datagrams on Ethernet, one every
// step, for tests that need traffic no sample capture has.
type Synth struct {
	t    testing.TB
	buf  bytes.Buffer
	w    *pcapgo.Writer
	at   time.Time
	step time.Duration
}

// NewSynth starts a capture whose first frame is at 2023-11-14T22:13:20Z
// plus step.
func NewSynth(t testing.TB, step time.Duration) *Synth {
	t.Helper()
	s := &Synth{t: t, at: time.Unix(1_700_000_000, 0), step: step}
	s.w = pcapgo.NewWriter(&s.buf)
	if err := s.w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	return s
}

// Send writes one UDP datagram from src to dst, step after the last frame.
func (s *Synth) Send(src, dst netip.AddrPort, payload []byte) {
	s.t.Helper()
	s.WriteFrame(UDPFrame(s.t, src, dst, payload))
}

// WriteFrame writes one Ethernet frame, step after the last one.
func (s *Synth) WriteFrame(f []byte) {
	s.t.Helper()
	s.at = s.at.Add(s.step)
	if err := s.w.WritePacket(gopacket.CaptureInfo{Timestamp: s.at, CaptureLength: len(f), Length: len(f)}, f); err != nil {
		s.t.Fatal(err)
	}
}

// Wait lets d of capture time pass before the next frame.
func (s *Synth) Wait(d time.Duration) { s.at = s.at.Add(d) }

// Bytes returns the capture so far.
func (s *Synth) Bytes() []byte { return s.buf.Bytes() }

// WriteFile writes the capture so far to a file in a temporary directory
// of the test and returns its path.
func (s *Synth) WriteFile(name string) string {
	s.t.Helper()
	p := s.t.TempDir() + "/" + name
	if err := os.WriteFile(p, s.buf.Bytes(), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// UDPFrame builds an Ethernet/IPv4 (or IPv6) UDP frame.
func UDPFrame(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	var ip interface {
		gopacket.NetworkLayer
		gopacket.SerializableLayer
	} = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	if src.Addr().Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// AudioPacket is a 20 ms RTP packet of 160 payload octets that vary with
// seq and salt (every octet is a valid G.711 sample), so that each packet
// of each stream sounds different and misplaced audio shows.
func AudioPacket(ssrc uint32, seq uint16, pt uint8, salt byte) []byte {
	payload := make([]byte, 160)
	for i := range payload {
		payload[i] = byte(int(seq)*7+i*13) ^ salt
	}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc},
		Payload: payload}
	b, _ := p.Marshal()
	return b
}

// AudioSDP offers one audio line at addr; extra lines follow the m-line.
func AudioSDP(addr netip.AddrPort, proto string, pt int, extra ...string) string {
	s := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d %s %d\r\n", addr.Addr(), addr.Addr(), addr.Port(), proto, pt)
	for _, e := range extra {
		s += e + "\r\n"
	}
	return s
}

// DialogMessage is one message of dialog callID from alice to bob: everything
// but the initial INVITE carries Bob's tag.
func DialogMessage(callID, first, cseq, body string) []byte {
	to := "<sip:bob@example.com>;tag=b1"
	if strings.HasPrefix(first, "INVITE") && cseq == "1 INVITE" {
		to = "<sip:bob@example.com>"
	}
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	return []byte(first + "\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" + cseq[:1] + "\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: " + to +
		"\r\nCall-ID: " + callID + "\r\nCSeq: " + cseq + "\r\nContact: <sip:alice@192.0.2.10>\r\n" + ct +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body)
}
