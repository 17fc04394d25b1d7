package udprecv_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/verbatimrec/verbatim/ingest/internal/udprecv"
)

func pair(t testing.TB) (*net.UDPConn, *net.UDPConn) {
	t.Helper()
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	_ = rx.SetReadBuffer(8 << 20)
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return rx, tx
}

// TestReceivesEveryDatagram: every datagram sent arrives, in order, with
// its payload and source, in batches; one longer than MaxDatagram is
// reported truncated.
func TestReceivesEveryDatagram(t *testing.T) {
	rx, tx := pair(t)
	rc, err := udprecv.New(rx, 32)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		p := make([]byte, 172)
		binary.BigEndian.PutUint32(p, uint32(i))
		if _, err := tx.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	from := tx.LocalAddr().(*net.UDPAddr).AddrPort()
	got, calls, truncated := 0, 0, 0
	for got < n+1 {
		k, err := rc.Read(func(p []byte, src netip.AddrPort, trunc bool) {
			if src != from {
				t.Fatalf("datagram from %v, sent from %v", src, from)
			}
			switch {
			case trunc:
				truncated++
			case len(p) != 172 || binary.BigEndian.Uint32(p) != uint32(got) || !bytes.Equal(p[4:], make([]byte, 168)):
				t.Fatalf("datagram %d: %d bytes, number %d", got, len(p), binary.BigEndian.Uint32(p))
			}
			got++
		})
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 || k > 32 {
			t.Fatalf("a read of %d datagrams", k)
		}
		calls++
	}
	if truncated != 1 {
		t.Fatalf("%d truncated, want the 3000-byte one", truncated)
	}
	t.Logf("%d datagrams in %d reads", got, calls)
}

// benchReceive sends RTP-sized datagrams in bursts of burst and receives
// each burst before the next (so none is lost to a full socket buffer),
// reading with read.
func benchReceive(b *testing.B, burst int, read func(rx *net.UDPConn) func() int) {
	rx, tx := pair(b)
	r := read(rx)
	p := make([]byte, 172)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		k := min(burst, b.N-sent)
		b.StopTimer() // only the receiving is measured
		for range k {
			if _, err := tx.Write(p); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for got := 0; got < k; {
			got += r()
		}
		sent += k
	}
}

// BenchmarkReceive: the cost of receiving one RTP packet (the sender's
// writes are not timed), read one datagram per system call or in batches.
func BenchmarkReceive(b *testing.B) {
	b.Run("one-per-call", func(b *testing.B) {
		benchReceive(b, 64, func(rx *net.UDPConn) func() int {
			buf := make([]byte, udprecv.MaxDatagram)
			return func() int {
				if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
				return 1
			}
		})
	})
	b.Run("batched-64", func(b *testing.B) {
		benchReceive(b, 64, func(rx *net.UDPConn) func() int {
			rc, err := udprecv.New(rx, 64)
			if err != nil {
				b.Fatal(err)
			}
			return func() int {
				n, err := rc.Read(func([]byte, netip.AddrPort, bool) {})
				if err != nil {
					b.Fatal(err)
				}
				return n
			}
		})
	})
}
