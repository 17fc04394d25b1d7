package pcapread_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

type summary struct {
	sip, rtp6000, other int
	firstSIP            string
	stats               pcapread.Stats
	err                 error
}

func readAll(t *testing.T, data []byte) summary {
	t.Helper()
	r, err := pcapread.Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var s summary
	for {
		p, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
			break
		}
		switch {
		case p.Src.Port() == 5060 || p.Dst.Port() == 5060:
			s.sip++
			if s.firstSIP == "" {
				s.firstSIP = string(p.Payload[:min(len(p.Payload), 40)])
			}
		case p.Dst.Port() == 6000:
			s.rtp6000++
		default:
			s.other++
		}
	}
	s.stats = r.Stats()
	return s
}

func TestG711Capture(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	s := readAll(t, data)
	if s.err != nil {
		t.Fatal(s.err)
	}
	// MANIFEST: 852 frames; 10 SIP frames on 5060 (sipnab: "2 dialog(s) …
	// 10 frame(s)"); 425 PCMU + 414 PCMA RTP packets to port 6000; and 3
	// tiny FreeSWITCH socket wake-ups sent to its own media ports (frames
	// 3, 431 and 436).
	if s.stats.Frames != 852 || s.sip != 10 || s.rtp6000 != 425+414 || s.other != 3 {
		t.Fatalf("frames %d, sip %d, to :6000 %d; stats %+v", s.stats.Frames, s.sip, s.rtp6000, s.stats)
	}
	if !strings.HasPrefix(s.firstSIP, "INVITE sip:") {
		t.Fatalf("first SIP payload %q", s.firstSIP)
	}

	// Cut the file in the middle of a frame: every frame before the cut is
	// returned, then a clear ErrTruncated.
	cut := readAll(t, data[:len(data)/2+7])
	if !errors.Is(cut.err, pcapread.ErrTruncated) {
		t.Fatalf("truncated file: err %v, want ErrTruncated", cut.err)
	}
	if cut.stats.Frames < 300 || cut.sip < 4 {
		t.Fatalf("truncated file lost the frames before the cut: %+v", cut.stats)
	}
	t.Logf("truncated at %d bytes: %d frames kept, then %v", len(data)/2+7, cut.stats.Frames, cut.err)
}

func TestPPPoE(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_DTMFsipinfo.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	s := readAll(t, data)
	if s.err != nil {
		t.Fatal(s.err)
	}
	// 32 frames of SIP over PPPoE: 5 INVITEs, 2 CANCELs, 4 INFOs and their
	// responses all decode down to UDP.
	if s.stats.Frames != 32 || s.sip < 20 || !strings.HasPrefix(s.firstSIP, "INVITE ") {
		t.Fatalf("PPPoE capture: sip %d, first %q, stats %+v", s.sip, s.firstSIP, s.stats)
	}
}

func TestPcapng(t *testing.T) {
	// A pcapng file written here, with one UDP frame and one ARP frame.
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	sb := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
		SrcIP: []byte{0x20, 1, 0xd, 0xb8, 15: 1}, DstIP: []byte{0x20, 1, 0xd, 0xb8, 15: 2}}
	udp := &layers.UDP{SrcPort: 5060, DstPort: 5062}
	_ = udp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload("OPTIONS sip:x SIP/2.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	frame := sb.Bytes()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(frame), Length: len(frame)}, frame); err != nil {
		t.Fatal(err)
	}
	arp := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...)
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(arp), Length: len(arp)}, arp); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapread.Open(&buf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if p.Src.String() != "[2001:db8::1]:5060" || p.Dst.Port() != 5062 || !p.Time.Equal(at) || !strings.HasPrefix(string(p.Payload), "OPTIONS") {
		t.Fatalf("packet %+v", p)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
	if st := r.Stats(); st.Frames != 2 || st.NotIP != 1 || st.Decoded != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNotACapture(t *testing.T) {
	for _, in := range []string{"", "hello world, not a pcap at all"} {
		if _, err := pcapread.Open(strings.NewReader(in)); err == nil {
			t.Fatalf("Open(%q) succeeded", in)
		}
	}
}

func BenchmarkNext(b *testing.B) {
	data, err := os.ReadFile(stacktest.SharedTestdata(b, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		r, _ := pcapread.Open(bytes.NewReader(data))
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			n++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/packet")
}

func FuzzOpenNext(f *testing.F) {
	for _, name := range []string{"pcap/wireshark_sip-rtp-g711.pcap", "pcap/wireshark_DTMFsipinfo.pcap"} {
		data, err := os.ReadFile(stacktest.SharedTestdata(f, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:min(len(data), 4096)])
	}
	_, v6 := ipv6FragmentCapture(f)
	f.Add(v6.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := pcapread.Open(bytes.NewReader(data))
		if err != nil {
			return
		}
		for range 10000 {
			if _, err := r.Next(); err != nil {
				return
			}
		}
	})
}

// TestReassembleFragments: a 3,000-byte UDP datagram (a SIP INVITE with a
// big SDP, say) sent as three IPv4 fragments, out of order, comes out
// whole; a set missing a fragment is counted as lost when it times out.
func TestReassembleFragments(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 300)
	udp := &layers.UDP{SrcPort: 5060, DstPort: 5060}
	ipHdr := layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Id: 77,
		SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{192, 0, 2, 2}}
	if err := udp.SetNetworkLayerForChecksum(&ipHdr); err != nil {
		t.Fatal(err)
	}
	ub := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(ub, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	datagram := ub.Bytes()
	frag := func(id uint16, off, end int, more bool) []byte {
		ip := ipHdr
		ip.Id, ip.FragOffset = id, uint16(off/8)
		if more {
			ip.Flags = layers.IPv4MoreFragments
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, &ip, gopacket.Payload(datagram[off:end])); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	n := len(datagram)
	for i, f := range [][]byte{
		frag(77, 1480, 2960, true), frag(77, 0, 1480, true), frag(77, 2960, n, false), // out of order
		frag(78, 1480, 2960, true), // a set whose other fragments are never captured
	} {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	// A later packet, after the fragment timeout, sweeps the lost set.
	late := frag(79, 0, n, false)
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: t0.Add(time.Minute), CaptureLength: len(late), Length: len(late)}, late); err != nil {
		t.Fatal(err)
	}
	rd, err := pcapread.Open(&buf)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	if p.Proto != pcapread.UDP || !bytes.Equal(p.Payload, payload) || p.Dst.Port() != 5060 {
		t.Fatalf("reassembled %d bytes to %v, want the %d-byte datagram", len(p.Payload), p.Dst, len(payload))
	}
	if _, err := rd.Next(); err != nil { // the unfragmented one
		t.Fatal(err)
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
	if st := rd.Stats(); st.Fragments != 4 || st.Reassembled != 1 || st.FragmentsLost != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestVLANs: UDP in a frame with one 802.1Q tag, and with two (QinQ,
// 802.1ad outer tag), decodes the same.
func TestVLANs(t *testing.T) {
	payload := []byte("INVITE sip:bob@example.com SIP/2.0\r\n\r\n")
	build := func(tags []layers.EthernetType) []byte {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{192, 0, 2, 2}}
		udp := &layers.UDP{SrcPort: 5060, DstPort: 5060}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls := []gopacket.SerializableLayer{}
		first := layers.EthernetTypeIPv4
		if len(tags) > 0 {
			first = tags[0]
		}
		ls = append(ls, &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: first})
		for i := range tags {
			next := layers.EthernetTypeIPv4
			if i+1 < len(tags) {
				next = tags[i+1]
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(100 + i), Type: next})
		}
		ls = append(ls, ip, udp, gopacket.Payload(payload))
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, tags := range [][]layers.EthernetType{{layers.EthernetTypeDot1Q}, {layers.EthernetTypeQinQ, layers.EthernetTypeDot1Q}} {
		f := build(tags)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := pcapread.Open(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, err := rd.Next()
		if err != nil || p.Proto != pcapread.UDP || !bytes.Equal(p.Payload, payload) || p.Dst.Port() != 5060 {
			t.Fatalf("frame %d: %v %+v (stats %+v)", i+1, err, p, rd.Stats())
		}
	}
}

// ipv6FragmentCapture builds the capture TestReassembleIPv6Fragments
// reads (also a fuzz seed): the datagram's payload, and the file.
func ipv6FragmentCapture(t testing.TB) ([]byte, *bytes.Buffer) {
	src, dst := net.ParseIP("2001:db8::1"), net.ParseIP("2001:db8::2")
	payload := bytes.Repeat([]byte("0123456789"), 300)
	udp := &layers.UDP{SrcPort: 5060, DstPort: 5062}
	if err := udp.SetNetworkLayerForChecksum(&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, SrcIP: src, DstIP: dst}); err != nil {
		t.Fatal(err)
	}
	ub := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(ub, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	datagram := ub.Bytes()
	frame := func(next layers.IPProtocol, body []byte) []byte {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src, DstIP: dst}
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true}, eth, ip, gopacket.Payload(body)); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	frag := func(id uint32, off, end int, more bool) []byte {
		h := make([]byte, 8, 8+end-off)
		h[0] = byte(layers.IPProtocolUDP)
		field := uint16(off/8) << 3
		if more {
			field |= 1
		}
		binary.BigEndian.PutUint16(h[2:], field)
		binary.BigEndian.PutUint32(h[4:], id)
		return frame(layers.IPProtocolIPv6Fragment, append(h, datagram[off:end]...))
	}
	n := len(datagram)
	destOpts := append([]byte{byte(layers.IPProtocolUDP), 0, 1, 4, 0, 0, 0, 0}, datagram...) // PadN option
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for i, f := range [][]byte{
		frag(1, 1456, 2912, true), frag(1, 0, 1456, true), frag(1, 1456, 2912, true), frag(1, 2912, n, false), // out of order, one twice
		frag(2, 0, 1456, true), frag(2, 1448, 2912, true), // overlap
		frag(3, 1456, 2912, true), // never completed
		frame(layers.IPProtocolIPv6Destination, destOpts),
		frag(4, 0, n, false), // atomic
	} {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, int64(i)*1e6), CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	return payload, &buf
}

// TestReassembleIPv6Fragments: IPv6 carries fragmentation in an extension
// header (RFC 8200), which gopacket does not reassemble. A 3,000-byte UDP
// datagram in three fragments, out of order and one seen twice, comes out
// whole; overlapping fragments discard their datagram (RFC 5722); a set
// missing a fragment is lost at the end of the file; an atomic fragment
// and UDP behind a Destination Options header decode as they are.
func TestReassembleIPv6Fragments(t *testing.T) {
	payload, buf := ipv6FragmentCapture(t)
	rd, err := pcapread.Open(buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		p, err := rd.Next()
		if err != nil {
			t.Fatalf("datagram %d: %v (stats %+v)", i, err, rd.Stats())
		}
		if p.Proto != pcapread.UDP || !bytes.Equal(p.Payload, payload) || p.Src.String() != "[2001:db8::1]:5060" || p.Dst.Port() != 5062 {
			t.Fatalf("datagram %d: %d bytes %v -> %v, want the %d-byte datagram", i, len(p.Payload), p.Src, p.Dst, len(payload))
		}
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
	st := rd.Stats()
	if st.Fragments != 8 || st.Reassembled != 1 || st.FragmentsLost != 2 || !strings.Contains(st.LastMalformed, "overlap") {
		t.Fatalf("stats %+v", st)
	}
}

// toPcapng rewrites a classic pcap as pcapng, and returns each enhanced
// packet block's offset.
func toPcapng(t *testing.T, data []byte) ([]byte, []int) {
	t.Helper()
	pr, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriter(&buf, pr.LinkType())
	if err != nil {
		t.Fatal(err)
	}
	var offsets []int
	for {
		d, ci, err := pr.ReadPacketData()
		if err != nil {
			break
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, buf.Len())
		if err := w.WritePacket(ci, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), offsets
}

// TestDamagedRecordsAreSkipped: a corrupt record in the middle of a pcap
// (a length of 1 GB) or pcapng file (block lengths of 8 and 0xFFFFFFF0)
// costs that record only: reading resynchronises at the next valid one,
// says what it skipped, and every other frame is read.
func TestDamagedRecordsAreSkipped(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	whole := readAll(t, data)
	// Classic pcap: record 300's captured length becomes 1 GB.
	bad := bytes.Clone(data)
	off := 24
	for range 299 {
		off += 16 + int(binary.LittleEndian.Uint32(bad[off+8:]))
	}
	binary.LittleEndian.PutUint32(bad[off+8:], 1<<30)
	got := readAll(t, bad)
	if got.err != nil || got.stats.Frames != whole.stats.Frames-1 || got.stats.Damaged != 1 || got.stats.DamagedBytes == 0 ||
		!strings.Contains(got.stats.FirstDamage, "after frame 299") || !strings.Contains(got.stats.FirstDamage, "1073741824") {
		t.Fatalf("pcap with a 1 GB record: %d of %d frames, err %v, stats %+v", got.stats.Frames, whole.stats.Frames, got.err, got.stats)
	}
	// pcapng: two blocks damaged, one with length 8, one with 0xFFFFFFF0.
	ng, offsets := toPcapng(t, data)
	binary.LittleEndian.PutUint32(ng[offsets[100]+4:], 8)
	binary.LittleEndian.PutUint32(ng[offsets[500]+4:], 0xFFFFFFF0)
	got = readAll(t, ng)
	if got.err != nil || got.stats.Frames != whole.stats.Frames-2 || got.stats.Damaged != 2 {
		t.Fatalf("pcapng with two damaged blocks: %d of %d frames, err %v, stats %+v", got.stats.Frames, whole.stats.Frames, got.err, got.stats)
	}
	// A cut inside the last record: every frame before it, then
	// ErrTruncated saying where.
	got = readAll(t, data[:len(data)-50])
	if !errors.Is(got.err, pcapread.ErrTruncated) || got.stats.Frames != whole.stats.Frames-1 || !strings.Contains(got.err.Error(), "capture ended early after frame 851") {
		t.Fatalf("truncated: %d frames, err %v", got.stats.Frames, got.err)
	}
}
