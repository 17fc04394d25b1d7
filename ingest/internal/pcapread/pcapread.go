// Package pcapread reads pcap and pcapng captures (pure Go, gopacket's
// pcapgo) and decodes each frame down to its UDP or TCP payload without
// allocating per packet. Frames it cannot use are counted by reason, never
// fatal; a truncated file ends the read with ErrTruncated after every
// complete frame before the damage has been returned.
package pcapread

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ErrTruncated is returned by Next when the capture ends inside a frame or
// its header, or in damage no valid record follows: the file was cut or
// corrupted. Frames before it were valid. The wrapping error says where.
var ErrTruncated = errors.New("pcapread: capture truncated or corrupt")

// Transport protocols of a Packet.
const (
	UDP = 17
	TCP = 6
)

// Packet is one decoded frame. Payload aliases the reader's buffer and is
// valid only until the next call to Next.
type Packet struct {
	// Frame is the 1-based frame number in the file, as Wireshark counts.
	Frame   uint64
	Time    time.Time
	Src     netip.AddrPort
	Dst     netip.AddrPort
	Proto   uint8 // UDP or TCP
	Payload []byte
	// TCPSeq is the TCP sequence number, for stream reassembly.
	TCPSeq uint32
	// TCPSYN, TCPFIN and TCPRST are the TCP flags reassembly needs.
	TCPSYN, TCPFIN, TCPRST bool
}

// Stats counts what a Reader saw. Every frame lands in exactly one of
// Decoded or a skip reason.
type Stats struct {
	Frames      uint64
	Decoded     uint64
	NotIP       uint64 // ARP, LLDP, other link protocols
	NotUDPOrTCP uint64 // ICMP and others
	Fragments   uint64 // IPv4 and IPv6 fragments seen
	Reassembled uint64 // datagrams rebuilt from them
	// FragmentsLost counts fragment sets given up on: a fragment never
	// came (not captured), or they contradicted each other.
	FragmentsLost uint64
	Malformed     uint64 // headers that do not parse
	LastMalformed string
	// Damaged counts stretches of the file skipped because their framing
	// was corrupt (a record claiming 1 GB, a pcapng block of length 8),
	// DamagedBytes their bytes, FirstDamage describes the first. Reading
	// goes on at the next valid record: valid data around damage is kept.
	Damaged      uint64
	DamagedBytes uint64
	FirstDamage  string
	LastDamage   string
}

// PacketSource yields raw frames: a capture file, or a live interface.
type PacketSource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ErrNoPacket is returned (wrapped) by a live PacketSource when no frame
// arrived within its read timeout; Next passes it on.
var ErrNoPacket = errors.New("pcapread: no packet yet")

// Reader decodes packets from one capture file. Not safe for concurrent use.
type Reader struct {
	src      PacketSource
	link     layers.LinkType
	stats    Stats
	parser   *gopacket.DecodingLayerParser
	ipParser *gopacket.DecodingLayerParser
	eth      layers.Ethernet
	dot1q    layers.Dot1Q
	sll      layers.LinuxSLL
	sll2     layers.LinuxSLL2
	loop     layers.Loopback
	ip4      layers.IPv4
	ip6      layers.IPv6
	udp      layers.UDP
	tcp      layers.TCP
	payload  gopacket.Payload
	decoded  []gopacket.LayerType
	pkt      Packet
	defrag   *ip4defrag.IPv4Defragmenter
	defrag6  ip6Defrag
	swept    time.Time // last time old fragments were given up
	// truncated is the damage that ended the file early, if any.
	truncated *Damage
}

// damaged counts one stretch of skipped damage.
func (r *Reader) damaged(d Damage) {
	if d.Truncated {
		r.truncated = &d
		return
	}
	r.stats.Damaged++
	r.stats.DamagedBytes += uint64(d.Skipped)
	if r.stats.FirstDamage == "" {
		r.stats.FirstDamage = d.String()
	}
	r.stats.LastDamage = d.String()
}

// fragmentTimeout is how long the fragments of one datagram may take to
// arrive (Linux's ipfrag_time is 30 s).
const fragmentTimeout = 30 * time.Second

// Open sniffs the format (pcap or pcapng, either byte order, micro- or
// nanosecond) and returns a Reader.
func Open(r io.Reader) (*Reader, error) {
	raw := bufio.NewReaderSize(r, maxBlock+4096) // a whole record fits: resynchronising looks ahead
	magic, err := raw.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("pcapread: not a capture file: %w", err)
	}
	rd := &Reader{decoded: make([]gopacket.LayerType, 0, 8)}
	// pcapgo parses what the framer passes on: the file with its damaged
	// records cut out. pcapgo reads ahead through a buffer of its own (4
	// KiB), so a damage is reported at most that far before the frames
	// preceding it are returned.
	br := newFramer(raw, rd.damaged)
	if binary.LittleEndian.Uint32(magic) == 0x0A0D0D0A {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{})
		if err != nil {
			return nil, fmt.Errorf("pcapread: pcapng: %w", err)
		}
		rd.src, rd.link = ng, ng.LinkType()
	} else {
		p, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcapread: not a pcap or pcapng file: %w", err)
		}
		rd.src, rd.link = p, p.LinkType()
	}
	return newReader(rd)
}

// NewReader decodes frames of link type link from a live source.
func NewReader(src PacketSource, link layers.LinkType) (*Reader, error) {
	return newReader(&Reader{src: src, link: link, decoded: make([]gopacket.LayerType, 0, 8)})
}

func newReader(rd *Reader) (*Reader, error) {
	var first gopacket.LayerType
	switch rd.link {
	case layers.LinkTypeEthernet:
		first = layers.LayerTypeEthernet
	case layers.LinkTypeLinuxSLL:
		first = layers.LayerTypeLinuxSLL
	case layers.LinkTypeLinuxSLL2:
		first = layers.LayerTypeLinuxSLL2
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		first = layers.LayerTypeLoopback
	case layers.LinkTypeRaw, layers.LinkTypeIPv4:
		first = layers.LayerTypeIPv4
	default:
		return nil, fmt.Errorf("pcapread: unsupported link type %v", rd.link)
	}
	dl := []gopacket.DecodingLayer{&rd.eth, &rd.dot1q, &rd.sll, &rd.sll2, &rd.loop, &rd.ip4, &rd.ip6, &rd.udp, &rd.tcp, &rd.payload}
	rd.parser = gopacket.NewDecodingLayerParser(first, dl...)
	rd.parser.IgnoreUnsupported = true
	rd.ipParser = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, dl...)
	rd.ipParser.IgnoreUnsupported = true
	return rd, nil
}

// Stats returns the counters so far.
func (r *Reader) Stats() Stats { return r.stats }

// LinkType is the capture's link-layer type.
func (r *Reader) LinkType() layers.LinkType { return r.link }

// Next returns the next UDP or TCP packet. It returns io.EOF at the end of
// a complete file and ErrTruncated (wrapped) at a damaged end.
func (r *Reader) Next() (*Packet, error) {
	for {
		data, ci, err := r.src.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.sweepFragments(time.Unix(1<<40, 0)) // the file is over: incomplete sets never will be
				if r.truncated != nil {
					return nil, fmt.Errorf("%w: %s", ErrTruncated, r.truncated)
				}
				return nil, io.EOF
			}
			if errors.Is(err, ErrNoPacket) {
				return nil, err
			}
			return nil, fmt.Errorf("%w after frame %d: %w", ErrTruncated, r.stats.Frames, err)
		}
		r.stats.Frames++
		if r.stats.Fragments > 0 && ci.Timestamp.Sub(r.swept) > fragmentTimeout {
			// Fragments that waited too long will not be completed.
			r.sweepFragments(ci.Timestamp.Add(-fragmentTimeout))
			r.swept = ci.Timestamp
		}
		if r.decode(data, ci.Timestamp) {
			r.stats.Decoded++
			r.pkt.Frame = r.stats.Frames
			r.pkt.Time = ci.Timestamp
			return &r.pkt, nil
		}
	}
}

// sweepFragments gives up the datagrams whose first fragment came before t.
func (r *Reader) sweepFragments(t time.Time) {
	if r.defrag != nil {
		r.stats.FragmentsLost += uint64(r.defrag.DiscardOlderThan(t))
	}
	r.stats.FragmentsLost += uint64(r.defrag6.discardOlderThan(t))
}

func (r *Reader) malformed(err error) bool {
	r.stats.Malformed++
	r.stats.LastMalformed = fmt.Sprintf("frame %d: %v", r.stats.Frames, err)
	return false
}

// fragment keeps one IPv4 fragment (copied: frames are reused) and, when
// it completes a datagram, decodes that datagram's UDP or TCP into r.pkt.
func (r *Reader) fragment(at time.Time) bool {
	r.fragmentSeen(at)
	if r.defrag == nil {
		r.defrag = ip4defrag.NewIPv4Defragmenter()
	}
	in := r.ip4
	in.SrcIP, in.DstIP = bytes.Clone(r.ip4.SrcIP), bytes.Clone(r.ip4.DstIP)
	in.Contents, in.Payload, in.Options = nil, bytes.Clone(r.ip4.Payload), nil
	out, err := r.defrag.DefragIPv4WithTimestamp(&in, at)
	if err != nil {
		r.stats.FragmentsLost++
		return r.malformed(err)
	}
	if out == nil {
		return false // more to come
	}
	r.stats.Reassembled++
	a, _ := netip.AddrFromSlice(out.SrcIP.To4())
	b, _ := netip.AddrFromSlice(out.DstIP.To4())
	return r.transport(out.Protocol, out.Payload, a, b)
}

func (r *Reader) fragmentSeen(at time.Time) {
	if r.stats.Fragments == 0 {
		r.swept = at
	}
	r.stats.Fragments++
}

// transport decodes the UDP or TCP inside an IP payload into r.pkt.
func (r *Reader) transport(proto layers.IPProtocol, payload []byte, a, b netip.Addr) bool {
	switch proto {
	case layers.IPProtocolUDP:
		if err := r.udp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
			return r.malformed(err)
		}
		r.pkt.Proto, r.pkt.Payload = UDP, r.udp.Payload
		r.pkt.Src, r.pkt.Dst = netip.AddrPortFrom(a, uint16(r.udp.SrcPort)), netip.AddrPortFrom(b, uint16(r.udp.DstPort))
		return true
	case layers.IPProtocolTCP:
		if err := r.tcp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
			return r.malformed(err)
		}
		r.pkt.Proto, r.pkt.Payload, r.pkt.TCPSeq = TCP, r.tcp.Payload, r.tcp.Seq
		r.pkt.TCPSYN, r.pkt.TCPFIN, r.pkt.TCPRST = r.tcp.SYN, r.tcp.FIN, r.tcp.RST
		r.pkt.Src, r.pkt.Dst = netip.AddrPortFrom(a, uint16(r.tcp.SrcPort)), netip.AddrPortFrom(b, uint16(r.tcp.DstPort))
		return true
	}
	r.stats.NotUDPOrTCP++
	return false
}

// ipv6Extensions walks the extension headers gopacket leaves undecoded
// (routing, destination options, authentication) to the UDP or TCP after
// them, reassembling a fragmented datagram (RFC 8200) on the way.
func (r *Reader) ipv6Extensions(at time.Time) bool {
	next := r.ip6.NextHeader
	if r.ip6.HopByHop != nil {
		next = r.ip6.HopByHop.NextHeader
	}
	p := r.ip6.Payload
	src, _ := netip.AddrFromSlice(r.ip6.SrcIP)
	dst, _ := netip.AddrFromSlice(r.ip6.DstIP)
	fragmented := false
	for range 16 { // a bound on header chains
		switch next {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination, layers.IPProtocolAH:
			if len(p) < 8 {
				return r.malformed(fmt.Errorf("IPv6 %v header truncated", next))
			}
			n := (int(p[1]) + 1) * 8
			if next == layers.IPProtocolAH {
				n = (int(p[1]) + 2) * 4
			}
			if len(p) < n {
				return r.malformed(fmt.Errorf("IPv6 %v header truncated", next))
			}
			next, p = layers.IPProtocol(p[0]), p[n:]
		case layers.IPProtocolIPv6Fragment:
			if fragmented || len(p) < 8 {
				return r.malformed(errors.New("IPv6 fragment header truncated or repeated"))
			}
			r.fragmentSeen(at)
			field := binary.BigEndian.Uint16(p[2:4])
			k := frag6Key{src: src, dst: dst, id: binary.BigEndian.Uint32(p[4:8])}
			if field>>3 == 0 && field&1 == 0 {
				// An atomic fragment (RFC 6946): offset 0, no more to come.
				next, p, fragmented = layers.IPProtocol(p[0]), p[8:], true
				continue
			}
			payload, proto, lost, err := r.defrag6.add(k, int(field>>3)*8, field&1 != 0, p[0], p[8:], at)
			r.stats.FragmentsLost += uint64(lost)
			if err != nil {
				return r.malformed(err)
			}
			if payload == nil {
				return false // more to come
			}
			r.stats.Reassembled++
			next, p, fragmented = layers.IPProtocol(proto), payload, true
		case layers.IPProtocolUDP, layers.IPProtocolTCP:
			return r.transport(next, p, src, dst)
		default:
			r.stats.NotUDPOrTCP++
			return false
		}
	}
	return r.malformed(errors.New("IPv6 extension header chain too long"))
}

// decode fills r.pkt from one frame and reports whether it is UDP or TCP.
func (r *Reader) decode(data []byte, at time.Time) bool {
	r.decoded = r.decoded[:0]
	if err := r.parser.DecodeLayers(data, &r.decoded); err != nil {
		return r.malformed(err)
	}
	// PPPoE session frames (Ethernet type 0x8864) carry PPP; IPv4 is PPP
	// protocol 0x0021. gopacket has no DecodingLayer for them.
	if n := len(r.decoded); n > 0 && r.decoded[n-1] != layers.LayerTypeIPv4 && r.decoded[n-1] != layers.LayerTypeIPv6 &&
		(r.eth.EthernetType == layers.EthernetTypePPPoESession) && !containsIP(r.decoded) {
		p := r.eth.Payload
		if len(p) < 8 || binary.BigEndian.Uint16(p[6:8]) != 0x0021 {
			r.stats.NotIP++
			return false
		}
		r.decoded = r.decoded[:0]
		if err := r.ipParser.DecodeLayers(p[8:], &r.decoded); err != nil {
			return r.malformed(err)
		}
	}
	var haveIP, v6 bool
	for _, lt := range r.decoded {
		switch lt {
		case layers.LayerTypeIPv4:
			haveIP = true
			if r.ip4.Flags&layers.IPv4MoreFragments != 0 || r.ip4.FragOffset != 0 {
				return r.fragment(at)
			}
			a, _ := netip.AddrFromSlice(r.ip4.SrcIP.To4())
			b, _ := netip.AddrFromSlice(r.ip4.DstIP.To4())
			r.pkt.Src, r.pkt.Dst = netip.AddrPortFrom(a, 0), netip.AddrPortFrom(b, 0)
		case layers.LayerTypeIPv6:
			haveIP, v6 = true, true
			a, _ := netip.AddrFromSlice(r.ip6.SrcIP)
			b, _ := netip.AddrFromSlice(r.ip6.DstIP)
			r.pkt.Src, r.pkt.Dst = netip.AddrPortFrom(a, 0), netip.AddrPortFrom(b, 0)
		case layers.LayerTypeUDP:
			r.pkt.Proto = UDP
			r.pkt.Src = netip.AddrPortFrom(r.pkt.Src.Addr(), uint16(r.udp.SrcPort))
			r.pkt.Dst = netip.AddrPortFrom(r.pkt.Dst.Addr(), uint16(r.udp.DstPort))
			r.pkt.Payload = r.udp.Payload
			return true
		case layers.LayerTypeTCP:
			r.pkt.Proto = TCP
			r.pkt.Src = netip.AddrPortFrom(r.pkt.Src.Addr(), uint16(r.tcp.SrcPort))
			r.pkt.Dst = netip.AddrPortFrom(r.pkt.Dst.Addr(), uint16(r.tcp.DstPort))
			r.pkt.Payload = r.tcp.Payload
			r.pkt.TCPSeq = r.tcp.Seq
			r.pkt.TCPSYN, r.pkt.TCPFIN, r.pkt.TCPRST = r.tcp.SYN, r.tcp.FIN, r.tcp.RST
			return true
		}
	}
	if v6 {
		return r.ipv6Extensions(at)
	}
	if haveIP {
		r.stats.NotUDPOrTCP++
	} else {
		r.stats.NotIP++
	}
	return false
}

func containsIP(ls []gopacket.LayerType) bool {
	for _, l := range ls {
		if l == layers.LayerTypeIPv4 || l == layers.LayerTypeIPv6 {
			return true
		}
	}
	return false
}
