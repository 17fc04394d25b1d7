package loadtest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Config describes a synthetic capture: Calls G.711 µ-law calls, all
// talking at once for Duration, as a mirror port would see them.
type Config struct {
	Calls    int
	Duration time.Duration
	// Start is the capture time of the first media packet; the calls are
	// set up in the second before it, and their SIP Call-IDs name it, so
	// captures with different starts hold different calls. Default
	// 2026-01-01T00:00:00Z.
	Start time.Time
}

// Stats says what a capture holds.
type Stats struct {
	Calls       int
	RTPPackets  uint64
	SIPMessages uint64
	Bytes       uint64 // frame bytes
}

const (
	ptime        = 20 * time.Millisecond
	payloadBytes = 160 // 20 ms of G.711 at 8 kHz
	callerMedia  = 40000
	calleeMedia  = 50000
)

// WritePcap writes the capture to w in time order:
//   - each call's INVITE, 200 OK and ACK, spread over the second before
//     Start;
//   - then both directions' RTP every 20 ms for Duration, the calls'
//     packets staggered evenly within each 20 ms, as independent phones'
//     clocks would put them;
//   - then each call's BYE and 200 OK, spread over the second after.
//
// Call i runs between 10.1.x.y and 10.2.x.y (x.y from i), so every call
// has its own addresses. The audio is a different tone per call.
func WritePcap(w io.Writer, cfg Config) (Stats, error) {
	if cfg.Calls <= 0 || cfg.Calls > 1<<16 {
		return Stats{}, fmt.Errorf("loadtest: calls must be 1 to 65536, got %d", cfg.Calls)
	}
	if cfg.Duration < ptime {
		return Stats{}, fmt.Errorf("loadtest: duration must be at least %v", ptime)
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	g := &gen{pw: pcapgo.NewWriter(bw), frame: make([]byte, 0, 2048)}
	if err := g.pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return Stats{}, err
	}
	n := cfg.Calls
	calls := make([]call, n)
	for i := range calls {
		calls[i] = newCall(i, cfg.Start)
	}
	spread := func(i int) time.Duration { return time.Duration(i) * time.Second / time.Duration(n) }
	// Setup.
	for i := range n {
		at := cfg.Start.Add(-time.Second + spread(i))
		c := &calls[i]
		g.sip(at, c.caller, c.callee, c.message(fmt.Sprintf("INVITE sip:%s SIP/2.0", c.calleeURI), "1 INVITE", false, c.sdp(c.caller.ip, callerMedia)))
		g.sip(at.Add(time.Millisecond), c.callee, c.caller, c.message("SIP/2.0 200 OK", "1 INVITE", true, c.sdp(c.callee.ip, calleeMedia)))
		g.sip(at.Add(2*time.Millisecond), c.caller, c.callee, c.message(fmt.Sprintf("ACK sip:%s SIP/2.0", c.calleeURI), "1 ACK", true, ""))
	}
	// Media.
	ticks := int(cfg.Duration / ptime)
	payload := make([]byte, payloadBytes)
	for k := range ticks {
		base := cfg.Start.Add(time.Duration(k) * ptime)
		for i := range n {
			at := base.Add(time.Duration(i) * ptime / time.Duration(n))
			c := &calls[i]
			tone(payload, i, k)
			g.rtp(at, endpoint{c.caller.ip, callerMedia}, endpoint{c.callee.ip, calleeMedia}, c.ssrc, uint16(k), uint32(k*payloadBytes), payload)
			g.rtp(at, endpoint{c.callee.ip, calleeMedia}, endpoint{c.caller.ip, callerMedia}, c.ssrc+1, uint16(k), uint32(k*payloadBytes), payload)
		}
	}
	// Teardown.
	end := cfg.Start.Add(time.Duration(ticks) * ptime)
	for i := range n {
		at := end.Add(spread(i))
		c := &calls[i]
		g.sip(at, c.caller, c.callee, c.message(fmt.Sprintf("BYE sip:%s SIP/2.0", c.calleeURI), "2 BYE", true, ""))
		g.sip(at.Add(time.Millisecond), c.callee, c.caller, c.message("SIP/2.0 200 OK", "2 BYE", true, ""))
	}
	g.stats.Calls = n
	if g.err == nil {
		g.err = bw.Flush()
	}
	return g.stats, g.err
}

type endpoint struct {
	ip   [4]byte
	port uint16
}

type call struct {
	i                    int
	run                  int64 // the capture's start, in the Call-ID
	caller, callee       endpoint
	callerURI, calleeURI string
	ssrc                 uint32
}

func newCall(i int, start time.Time) call {
	x, y := byte(i>>8), byte(i)
	return call{i: i, run: start.Unix(),
		caller: endpoint{[4]byte{10, 1, x, y}, 5060}, callee: endpoint{[4]byte{10, 2, x, y}, 5060},
		callerURI: fmt.Sprintf("agent%05d@bank.example", i), calleeURI: fmt.Sprintf("+4420%07d@carrier.example", i),
		ssrc: uint32(i)<<1 | 0x10000000}
}

func (c call) sdp(ip [4]byte, port int) string {
	a := fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3])
	return fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n",
		c.i, a, a, port)
}

// message is one SIP message of the call's dialog; answered adds the
// callee's tag.
func (c call) message(first, cseq string, answered bool, body string) []byte {
	to := "<sip:" + c.calleeURI + ">"
	if answered {
		to += ";tag=b" + fmt.Sprint(c.i)
	}
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	return fmt.Appendf(nil, "%s\r\nVia: SIP/2.0/UDP %d.%d.%d.%d:5060;branch=z9hG4bK%d%s\r\nFrom: <sip:%s>;tag=a%d\r\nTo: %s\r\nCall-ID: load-%d-%d@verbatim.test\r\nCSeq: %s\r\nContact: <sip:%s>\r\nMax-Forwards: 70\r\n%sContent-Length: %d\r\n\r\n%s",
		first, c.caller.ip[0], c.caller.ip[1], c.caller.ip[2], c.caller.ip[3], c.i, cseq[:1], c.callerURI, c.i, to, c.i, c.run, cseq, c.callerURI, ct, len(body), body)
}

// tone fills a payload with µ-law codes of a square-ish tone whose period
// depends on the call: every call sounds different, none is silent.
func tone(p []byte, call, tick int) {
	period := 8 + call%24
	for j := range p {
		if (tick*len(p)+j)/period%2 == 0 {
			p[j] = 0x20
		} else {
			p[j] = 0xa0
		}
	}
}

type gen struct {
	pw    *pcapgo.Writer
	frame []byte
	stats Stats
	err   error
}

func (g *gen) sip(at time.Time, from, to endpoint, msg []byte) {
	g.udp(at, from, to, msg)
	g.stats.SIPMessages++
}

func (g *gen) rtp(at time.Time, from, to endpoint, ssrc uint32, seq uint16, ts uint32, payload []byte) {
	var h [12]byte
	h[0], h[1] = 0x80, 0 // V=2, PT 0 (PCMU)
	binary.BigEndian.PutUint16(h[2:], seq)
	binary.BigEndian.PutUint32(h[4:], ts)
	binary.BigEndian.PutUint32(h[8:], ssrc)
	g.udp(at, from, to, h[:], payload)
	g.stats.RTPPackets++
}

// udp writes one Ethernet/IPv4/UDP frame (UDP checksum 0: none, as IPv4
// allows) carrying the concatenated parts.
func (g *gen) udp(at time.Time, from, to endpoint, parts ...[]byte) {
	if g.err != nil {
		return
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	f := g.frame[:0]
	f = append(f, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00) // Ethernet, IPv4
	ip := len(f)
	f = append(f, 0x45, 0)
	f = binary.BigEndian.AppendUint16(f, uint16(20+8+n))
	f = append(f, 0, 0, 0x40, 0, 64, 17, 0, 0) // id, DF, TTL, UDP, checksum
	f = append(f, from.ip[:]...)
	f = append(f, to.ip[:]...)
	binary.BigEndian.PutUint16(f[ip+10:], ipChecksum(f[ip:ip+20]))
	f = binary.BigEndian.AppendUint16(f, from.port)
	f = binary.BigEndian.AppendUint16(f, to.port)
	f = binary.BigEndian.AppendUint16(f, uint16(8+n))
	f = append(f, 0, 0)
	for _, p := range parts {
		f = append(f, p...)
	}
	g.frame = f
	g.err = g.pw.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(f), Length: len(f)}, f)
	g.stats.Bytes += uint64(len(f))
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
