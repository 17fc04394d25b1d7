// Package udprecv receives UDP datagrams in batches: recvmmsg(2) on Linux
// through golang.org/x/net's ipv4/ipv6 PacketConn.ReadBatch, one system
// call for up to a batch of datagrams instead of one each. An SRS receiving
// the RTP of thousands of sessions spends most of its receive cost in
// system calls; this is where it saves it.
package udprecv

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// MaxDatagram is the largest datagram kept whole: RTP over Ethernet fits
// in 1,500 bytes; a longer one is cut and reported as such.
const MaxDatagram = 2048

// batchReader is ReadBatch of ipv4.PacketConn or ipv6.PacketConn.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

type v6Reader struct{ pc *ipv6.PacketConn }

func (r v6Reader) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	return r.pc.ReadBatch(ms, flags) // ipv6.Message is the same type
}

// Receiver reads one socket's datagrams in batches. Not safe for
// concurrent use: give each socket one goroutine.
type Receiver struct {
	r    batchReader
	msgs []ipv4.Message
}

// New returns a Receiver of conn reading up to batch datagrams a call
// (default 64).
func New(conn *net.UDPConn, batch int) (*Receiver, error) {
	if batch <= 0 {
		batch = 64
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("udprecv: %v is not a UDP socket", conn.LocalAddr())
	}
	rc := &Receiver{msgs: make([]ipv4.Message, batch)}
	if la.IP.To4() != nil {
		rc.r = ipv4.NewPacketConn(conn)
	} else {
		rc.r = v6Reader{ipv6.NewPacketConn(conn)}
	}
	for i := range rc.msgs {
		rc.msgs[i].Buffers = [][]byte{make([]byte, MaxDatagram)}
	}
	return rc, nil
}

// Read waits for at least one datagram, then calls fn for each datagram
// the kernel has ready (up to the batch size), in order, with its payload
// (valid only during the call) and its source; truncated says a datagram
// was longer than MaxDatagram. It returns how many it read.
func (rc *Receiver) Read(fn func(payload []byte, from netip.AddrPort, truncated bool)) (int, error) {
	n, err := rc.r.ReadBatch(rc.msgs, 0)
	if err != nil {
		return 0, fmt.Errorf("udprecv: %w", err)
	}
	for i := range n {
		m := &rc.msgs[i]
		var from netip.AddrPort
		if ua, ok := m.Addr.(*net.UDPAddr); ok {
			from = ua.AddrPort()
		}
		fn(m.Buffers[0][:m.N], from, m.N > MaxDatagram || m.Flags&msgTrunc != 0)
	}
	return n, nil
}

// msgTrunc is MSG_TRUNC: the datagram was longer than the buffer.
const msgTrunc = 0x20
