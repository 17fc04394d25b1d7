package siptcp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

var (
	a = netip.MustParseAddrPort("10.0.0.1:50000")
	b = netip.MustParseAddrPort("10.0.0.2:5060")
)

func msg(i int, body string) string {
	return fmt.Sprintf("INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: c%d\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body)
}

// stream is three messages, a keep-alive and a compact-form length.
func stream() (string, []string) {
	m := []string{
		msg(1, "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n"),
		"SIP/2.0 200 OK\r\nCall-ID: c1\r\nl: 3\r\n\r\nabc",
		msg(2, ""),
	}
	return m[0] + m[1] + "\r\n\r\n" + m[2], m
}

func collect(r *Reassembler, segs []segment, seq0 uint32) []string {
	var out []string
	r.Segment(time.Unix(0, 0), a, b, seq0, true, false, false, nil, func([]byte) {})
	for _, s := range segs {
		r.Segment(time.Unix(1, 0), a, b, s.seq, false, false, false, s.data, func(m []byte) { out = append(out, string(m)) })
	}
	return out
}

// cut splits data into segments at random points, starting at seq.
func cut(rng *rand.Rand, data []byte, seq uint32) []segment {
	var segs []segment
	for off := 0; off < len(data); {
		n := 1 + rng.IntN(min(40, len(data)-off))
		segs = append(segs, segment{seq + uint32(off), data[off : off+n]})
		off += n
	}
	return segs
}

func TestReassembleAnySegmentation(t *testing.T) {
	data, want := stream()
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		seq0 := rng.Uint32() // includes wrap-around of the sequence space
		segs := cut(rng, []byte(data), seq0+1)
		// Reorder some, and retransmit some.
		rng.Shuffle(len(segs), func(i, j int) {
			if rng.IntN(4) == 0 {
				segs[i], segs[j] = segs[j], segs[i]
			}
		})
		for i := range segs {
			if rng.IntN(5) == 0 {
				segs = append(segs, segs[i])
			}
		}
		r := New()
		got := collect(r, segs, seq0)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("trial %d: got %q\nwant %q", trial, got, want)
		}
		if st := r.Stats(); st.KeepAlives == 0 || st.Messages != 3 {
			t.Fatalf("stats %+v", st)
		}
	}
}

// TestGapResynchronises: bytes never captured lose the message they fall
// in, and the next message is still found.
func TestGapResynchronises(t *testing.T) {
	data, want := stream()
	gapAt, gapLen := 20, 10 // inside the first message
	seq := uint32(1000)
	r := New()
	var got []string
	fn := func(m []byte) { got = append(got, string(m)) }
	r.Segment(time.Unix(0, 0), a, b, seq-1, true, false, false, nil, fn)
	r.Segment(time.Unix(0, 0), a, b, seq, false, false, false, []byte(data[:gapAt]), fn)
	// Fill the buffer behind the gap past MaxBuffered with keep-alives so
	// the gap is given up on.
	rest := data[gapAt+gapLen:] + string(bytes.Repeat([]byte("\r\n"), MaxBuffered))
	r.Segment(time.Unix(0, 0), a, b, seq+uint32(gapAt+gapLen), false, false, false, []byte(rest), fn)
	if len(got) != 2 || got[0] != want[1] || got[1] != want[2] {
		t.Fatalf("got %q", got)
	}
	if st := r.Stats(); st.GapBytes != uint64(gapLen) || st.DiscardedBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRSTAndFINForget(t *testing.T) {
	r := New()
	r.Segment(time.Unix(0, 0), a, b, 1, false, false, false, []byte("INVITE sip:x SIP/2.0\r\n"), func([]byte) {})
	if r.Stats().Flows != 1 {
		t.Fatal("flow not tracked")
	}
	r.Segment(time.Unix(0, 0), a, b, 1, false, false, true, nil, func([]byte) {})
	if r.Stats().Flows != 0 {
		t.Fatal("RST did not forget the flow")
	}
	r.Segment(time.Unix(0, 0), a, b, 1, false, false, false, []byte("x"), func([]byte) {})
	r.Expire(time.Unix(1, 0))
	if r.Stats().Flows != 0 {
		t.Fatal("idle flow not expired")
	}
}

// FuzzSegments: any bytes in any segmentation never panic, never deliver
// more than was given, and deliver only framed messages.
func FuzzSegments(f *testing.F) {
	data, _ := stream()
	f.Add([]byte(data), uint32(0), uint8(7))
	f.Add([]byte("SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n"), uint32(1<<32-3), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, seq uint32, step uint8) {
		r := New()
		n := int(step%64) + 1
		var delivered int
		for off := 0; off < len(data); off += n {
			end := min(off+n, len(data))
			r.Segment(time.Unix(0, 0), a, b, seq+uint32(off), false, false, false, data[off:end], func(m []byte) {
				delivered += len(m)
				if !bytes.Contains(m, []byte("\r\n\r\n")) {
					t.Fatalf("unframed message %q", m)
				}
			})
		}
		if delivered > len(data) {
			t.Fatalf("delivered %d bytes of %d", delivered, len(data))
		}
	})
}
