package rtpbatch_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/ingest/internal/rtpbatch"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func sealer(t testing.TB) *seal.Sealer {
	s, err := seal.New("demo", "dk-1", bytes.Repeat([]byte{7}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCaptureRoundTrip batches the PCMU stream of the G.711 sample, opens
// every batch and checks the payloads against the MANIFEST digest.
func TestCaptureRoundTrip(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapread.Open(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	s := sealer(t)
	b := rtpbatch.New(rtpbatch.Config{CallID: "c1", StreamID: "caller-audio"}, s)
	var batches []*verbatimv1.PacketBatch
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// The PCMU stream: SSRC 0x343DA99B to 10.0.2.20:6000.
		if p.Dst.Port() != 6000 || len(p.Payload) < 12 || p.Payload[8] != 0x34 || p.Payload[9] != 0x3D {
			continue
		}
		done, err := b.Add(p.Time, p.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if done != nil {
			batches = append(batches, done)
		}
	}
	last, err := b.Flush()
	if err != nil || last == nil {
		t.Fatalf("Flush: %v %v", last, err)
	}
	batches = append(batches, last)

	h := sha256.New()
	var packets, payloadBytes int
	var hdr rtp.Header
	for i, pb := range batches {
		if pb.GetBatchIndex() != uint64(i) || pb.GetSsrc() != 0x343DA99B || pb.GetPayloadType() != 0 {
			t.Fatalf("batch %d: index %d ssrc %x pt %d", i, pb.GetBatchIndex(), pb.GetSsrc(), pb.GetPayloadType())
		}
		if len(pb.GetArrivalOffsetsUs()) != int(pb.GetPacketCount()) || pb.GetArrivalOffsetsUs()[len(pb.GetArrivalOffsetsUs())-1] >= 1_000_000 {
			t.Fatalf("batch %d: %d offsets for %d packets, last %v", i, len(pb.GetArrivalOffsetsUs()), pb.GetPacketCount(), pb.GetArrivalOffsetsUs())
		}
		pt, err := s.Open(nil, rtpbatch.SealedType, pb.GetPackets())
		if err != nil {
			t.Fatal(err)
		}
		err = schemas.Packets(pt, func(pkt []byte) error {
			n, err := hdr.Unmarshal(pkt)
			if err != nil {
				return err
			}
			h.Write(pkt[n:])
			payloadBytes += len(pkt) - n
			packets++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && pb.GetFirstSequence() != batches[i-1].GetLastSequence()+1 {
			t.Fatalf("batch %d starts at %d after %d", i, pb.GetFirstSequence(), batches[i-1].GetLastSequence())
		}
	}
	// MANIFEST §1.1: 425 packets, seq 37595–38019, payload 68 000 B, digest 55b4f1d4….
	sum := hex.EncodeToString(h.Sum(nil))
	if packets != 425 || payloadBytes != 68000 || !strings.HasPrefix(sum, "55b4f1d4") {
		t.Fatalf("%d packets, %d payload bytes, digest %s", packets, payloadBytes, sum)
	}
	if batches[0].GetFirstSequence() != 37595 || batches[len(batches)-1].GetLastSequence() != 38019 {
		t.Fatalf("sequence range %d-%d", batches[0].GetFirstSequence(), batches[len(batches)-1].GetLastSequence())
	}
	t.Logf("425 packets in %d batches (about 1 s each)", len(batches))
}

func rtpPacket(seq uint16, ts uint32) []byte {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: seq, Timestamp: ts, SSRC: 42}, Payload: make([]byte, 160)}
	b, _ := p.Marshal()
	return b
}

func TestSequenceWrapAndReorder(t *testing.T) {
	b := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s", MaxDuration: time.Hour}, sealer(t))
	at := time.Unix(1000, 0)
	for _, seq := range []uint16{65533, 65534, 65535, 0, 65532, 1, 2} { // 65532 arrives late, after the wrap
		if _, err := b.Add(at, rtpPacket(seq, 0)); err != nil {
			t.Fatal(err)
		}
	}
	pb, err := b.Flush()
	if err != nil {
		t.Fatal(err)
	}
	if pb.GetFirstSequence() != 65533 || pb.GetLastSequence() != 65536+2 || pb.GetPacketCount() != 7 {
		t.Fatalf("first %d last %d count %d", pb.GetFirstSequence(), pb.GetLastSequence(), pb.GetPacketCount())
	}
	if again, _ := b.Flush(); again != nil {
		t.Fatal("empty flush returned a batch")
	}
}

func TestRejectsNonRTP(t *testing.T) {
	b := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s"}, sealer(t))
	for _, p := range [][]byte{{0xff, 0xff, 0xff, 0xff}, make([]byte, 12), nil} {
		if _, err := b.Add(time.Now(), p); !errors.Is(err, rtpbatch.ErrNotRTP) {
			t.Fatalf("Add(% x) = %v, want ErrNotRTP", p, err)
		}
	}
	if err := schemas.Packets([]byte{0x80, 0x01}, func([]byte) error { return nil }); err == nil {
		t.Fatal("malformed plaintext accepted")
	}
}

// BenchmarkAdd is the capture hot path: one G.711 packet (172 bytes) in,
// sealed batches out every 50 packets.
// BenchmarkAdd: one packet in, a sealed batch out every 50 (1 s of 20 ms
// packets), as ingest runs it (scratch shared between streams). Go's
// allocs/op rounds to a whole number, so the allocations per packet, which
// are per batch, are reported with their fraction.
func BenchmarkAdd(b *testing.B) {
	bt := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s", Shared: &rtpbatch.Shared{}}, sealer(b))
	pkts := make([][]byte, 1<<16)
	for i := range pkts {
		pkts[i] = rtpPacket(uint16(i), uint32(i)*160)
	}
	at := time.Unix(1000, 0)
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	i := 0
	for b.Loop() {
		at = at.Add(20 * time.Millisecond)
		if _, err := bt.Add(at, pkts[i&0xffff]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N), "allocs/packet")
}

// TestSharedScratch: batches sealed into shared scratch are the batches a
// Batcher without it returns, and each stays whole until the next one.
func TestSharedScratch(t *testing.T) {
	s := sealer(t)
	sh := &rtpbatch.Shared{}
	plain := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s"}, s)
	shared := [2]*rtpbatch.Batcher{
		rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s", Shared: sh}, s),
		rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "t", Shared: sh}, s),
	}
	at := time.Unix(1000, 0)
	batches := 0
	for i := range 500 {
		at = at.Add(20 * time.Millisecond)
		pkt := rtpPacket(uint16(i), uint32(i)*160)
		want, err := plain.Add(at, pkt)
		if err != nil {
			t.Fatal(err)
		}
		for _, bt := range shared {
			got, err := bt.Add(at, pkt)
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (want == nil) {
				t.Fatalf("packet %d: batch %v, without scratch %v", i, got != nil, want != nil)
			}
			if got == nil {
				continue
			}
			batches++
			gp, err := s.Open(nil, rtpbatch.SealedType, got.GetPackets())
			if err != nil {
				t.Fatal(err)
			}
			wp, _ := s.Open(nil, rtpbatch.SealedType, want.GetPackets())
			if !bytes.Equal(gp, wp) || !slices.Equal(got.GetArrivalOffsetsUs(), want.GetArrivalOffsetsUs()) {
				t.Fatalf("batch %d differs from the one sealed without scratch", got.GetBatchIndex())
			}
		}
	}
	if batches < 10 {
		t.Fatalf("%d batches", batches)
	}
}

// FuzzAdd: arbitrary datagrams on a media port are either refused as not
// RTP or batched, and every batched packet comes back unchanged when the
// batch is opened.
func FuzzAdd(f *testing.F) {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 65535, Timestamp: 160, SSRC: 9}, Payload: make([]byte, 160)}
	seed, _ := p.Marshal()
	f.Add(seed, seed)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, []byte{0x80})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		s := sealer(t)
		bt := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s"}, s)
		var kept [][]byte
		var batches []*verbatimv1.PacketBatch
		for i, pkt := range [][]byte{a, b, a} {
			done, err := bt.Add(time.Unix(0, int64(i)*int64(time.Millisecond)), pkt)
			if err != nil {
				continue
			}
			if done != nil { // closed by size
				batches = append(batches, done)
			}
			kept = append(kept, pkt)
		}
		pb, err := bt.Flush()
		if err != nil {
			t.Fatal(err)
		}
		if pb != nil {
			batches = append(batches, pb)
		}
		var got [][]byte
		var count uint32
		for _, pb := range batches {
			plain, err := s.Open(nil, schemas.SealedRTPPackets, pb.GetPackets())
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Packets(plain, func(p []byte) error { got = append(got, bytes.Clone(p)); return nil }); err != nil {
				t.Fatal(err)
			}
			count += pb.GetPacketCount()
		}
		if len(got) != len(kept) || int(count) != len(kept) {
			t.Fatalf("%d packets back, %d kept", len(got), len(kept))
		}
		for i := range got {
			if !bytes.Equal(got[i], kept[i]) {
				t.Fatalf("packet %d changed", i)
			}
		}
	})
}

// TestNewSSRCStartsABatch: a stream whose source changes closes its batch;
// the new source's sequence numbers are extended afresh, so one batch
// never mixes two sources.
func TestNewSSRCStartsABatch(t *testing.T) {
	b := rtpbatch.New(rtpbatch.Config{CallID: "c", StreamID: "s"}, sealer(t))
	pkt := func(ssrc uint32, seq uint16) []byte {
		p := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, SSRC: ssrc}, Payload: make([]byte, 160)}
		raw, _ := p.Marshal()
		return raw
	}
	t0 := time.Unix(0, 0)
	for i, seq := range []uint16{65534, 65535, 0} { // wraps: extended to 65536
		if done, err := b.Add(t0.Add(time.Duration(i)*20*time.Millisecond), pkt(1, seq)); err != nil || done != nil {
			t.Fatalf("%v %v", done, err)
		}
	}
	done, err := b.Add(t0.Add(60*time.Millisecond), pkt(2, 7))
	if err != nil || done == nil || done.GetSsrc() != 1 || done.GetPacketCount() != 3 || done.GetLastSequence() != 65536 {
		t.Fatalf("first source's batch: %v, %v", done, err)
	}
	last, err := b.Flush()
	if err != nil || last.GetSsrc() != 2 || last.GetFirstSequence() != 7 || last.GetBatchIndex() != 1 {
		t.Fatalf("second source's batch: %v, %v", last, err)
	}
}
