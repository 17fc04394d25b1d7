package udprecv_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/ingest/internal/udprecv"
)

// TestPollerReadsManySockets: one poller reads many sockets; every
// datagram arrives once, in order per socket, with its source and its
// socket's cookie; Remove hands over what a socket still holds before it
// returns.
func TestPollerReadsManySockets(t *testing.T) {
	type got struct {
		from netip.AddrPort
		seq  []uint32
	}
	var mu sync.Mutex
	seen := map[int]*got{}
	p, err := udprecv.NewPoller(func(ds []udprecv.Datagram) {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range ds {
			g := seen[d.Socket.(int)]
			if g == nil {
				g = &got{from: d.From}
				seen[d.Socket.(int)] = g
			}
			if d.From != g.from || d.Truncated || len(d.Payload) != 172 {
				t.Errorf("socket %d: datagram from %v (first from %v), %d bytes, truncated %v", d.Socket, d.From, g.from, len(d.Payload), d.Truncated)
			}
			g.seq = append(g.seq, binary.BigEndian.Uint32(d.Payload))
		}
	}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const socks, n = 20, 200
	var rxs []*udprecv.Socket
	var txs []*net.UDPConn
	for i := range socks {
		rx, err := udprecv.Listen(netip.MustParseAddrPort("127.0.0.1:0"), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		if err := p.Add(rx, i); err != nil {
			t.Fatal(err)
		}
		tx, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(rx.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		rxs, txs = append(rxs, rx), append(txs, tx)
	}
	for k := range n {
		for _, tx := range txs {
			b := make([]byte, 172)
			binary.BigEndian.PutUint32(b, uint32(k))
			if _, err := tx.Write(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, rx := range rxs { // loopback delivered every datagram within its send
		p.Remove(rx)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range socks {
		g := seen[i]
		if g == nil || len(g.seq) != n || g.from != txs[i].LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("socket %d: %+v", i, g)
		}
		for k, s := range g.seq {
			if s != uint32(k) {
				t.Fatalf("socket %d: datagram %d is number %d", i, k, s)
			}
		}
	}
}

// TestSocketCountsKernelDrops: datagrams the kernel drops for a full
// receive buffer are counted.
func TestSocketCountsKernelDrops(t *testing.T) {
	rx, err := udprecv.Listen(netip.MustParseAddrPort("127.0.0.1:0"), 1) // the kernel's minimum
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(rx.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if n, err := rx.Drops(); err != nil || n != 0 {
		t.Fatalf("a fresh socket: %d drops, %v", n, err)
	}
	for range 200 { // nobody reads: the buffer fills
		if _, err := tx.Write(make([]byte, 172)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := rx.Drops()
	if err != nil || n == 0 {
		t.Fatalf("200 datagrams to a full buffer: %d drops, %v", n, err)
	}
	t.Logf("%d of 200 dropped", n)
}
