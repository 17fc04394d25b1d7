package processors

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// BenchmarkApplyBatch is the processor's per-record path while calls are
// open: one PacketBatch record (one second of one G.711 stream) parsed and
// appended, still sealed, to its call's spool file. 1,000 calls are open,
// as on a busy partition.
func BenchmarkApplyBatch(b *testing.B) {
	t := &testing.T{}
	s, err := seal.New("demo", "dk-call-1", make([]byte, seal.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	const calls = 1000
	recs := make([]*kgo.Record, calls)
	t0 := time.Unix(1_480_000_000, 0)
	for i := range recs {
		pb := batchOf(t, s, "caller-audio", 1, 0, 50, t0, nil, 0x10)
		pb.CallId = fmt.Sprintf("call-%d", i)
		r, err := schemas.NewRecord(schemas.TopicMedia, []byte(pb.CallId),
			schemas.Envelope{ID: fmt.Sprint(i), Tenant: "demo", CallID: pb.CallId, OccurredAt: t0}, pb)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = r
	}
	p := &processor{cfg: Config{}, dir: b.TempDir(), open: map[int32]map[string]*openCall{}, undo: map[*openCall]*snapshot{}}
	p.cfg.setDefaults()
	defer p.discardAll()
	for _, r := range recs { // open every call first: steady state follows
		p.apply(r, false)
	}
	b.SetBytes(int64(len(recs[0].Value)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := recs[i%calls]
		p.open[0][string(r.Key)].streams["caller-audio"].next = 0 // the next batch, as far as it knows
		p.apply(r, false)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*50), "ns/packet")
	if p.txn.Rejected > 0 || p.txn.Duplicates > 0 {
		b.Fatalf("%d records rejected, %d taken for duplicates", p.txn.Rejected, p.txn.Duplicates)
	}
}

// FuzzScanBatch: the allocation-free header scan never panics, and on any
// input proto.Unmarshal accepts it reads the same fields.
func FuzzScanBatch(f *testing.F) {
	t := &testing.T{}
	s, _ := seal.New("demo", "dk-call-1", make([]byte, seal.KeySize))
	pb := batchOf(t, s, "caller-audio", 7, 100, 3, time.Unix(1_480_000_000, 5), nil, 0x10)
	pb.BatchIndex = 3
	seed, _ := proto.Marshal(pb)
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := scanBatch(b)
		var want verbatimv1.PacketBatch
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		if err != nil {
			t.Fatalf("scan rejects what proto accepts: %v", err)
		}
		// proto keeps the last occurrence of a repeated scalar field;
		// so does the scan.
		if string(h.callID) != want.GetCallId() || string(h.streamID) != want.GetStreamId() || h.batchIndex != want.GetBatchIndex() ||
			h.packetCount != uint64(want.GetPacketCount()) || h.firstArrival != want.GetFirstArrivalUnixNano() ||
			h.sealed != (want.GetPackets() != nil) {
			t.Fatalf("scan %+v, proto %v", h, &want)
		}
		if h.sealed && string(h.keyID) != want.GetPackets().GetKeyId() && len(h.keyID) != 0 {
			t.Fatalf("key id: scan %q, proto %q", h.keyID, want.GetPackets().GetKeyId())
		}
	})
}

func mediaRecord(t *testing.T, callID string, m proto.Message, at time.Time) *kgo.Record {
	t.Helper()
	r, err := schemas.NewRecord(schemas.TopicMedia, []byte(callID), schemas.Envelope{ID: fmt.Sprint(at.UnixNano()), Tenant: "demo", CallID: callID, OccurredAt: at}, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRollback: an aborted transaction is undone in place. The call it
// ended is open again with its spool intact, the call it opened is gone,
// and batches it appended are cut from the spool; applying the same
// records again gives the state a commit would have.
func TestRollback(t *testing.T) {
	s, _ := seal.New("demo", "dk-call-1", make([]byte, seal.KeySize))
	t0 := time.Unix(1_480_000_000, 0)
	batch := func(call string, idx int) *kgo.Record {
		pb := batchOf(t, s, "caller-audio", 1, idx*50, 50, t0.Add(time.Duration(idx)*time.Second), nil, 0x10)
		pb.CallId, pb.BatchIndex = call, uint64(idx)
		return mediaRecord(t, call, pb, t0)
	}
	ended := mediaRecord(t, "a", &verbatimv1.MediaEnded{CallId: "a"}, t0)
	p := &processor{cfg: Config{}, dir: t.TempDir(), open: map[int32]map[string]*openCall{}, undo: map[*openCall]*snapshot{}}
	p.cfg.setDefaults()
	defer p.discardAll()

	// Committed: call a with two batches.
	p.apply(batch("a", 0), false)
	p.apply(batch("a", 1), false)
	clear(p.undo)
	a := p.open[0]["a"]
	size := a.size
	// Aborted: a third batch of a, its end, and a new call b.
	txn := []*kgo.Record{batch("a", 2), ended, batch("b", 0)}
	for _, r := range txn {
		p.apply(r, false)
	}
	if len(p.done) != 1 || p.open[0]["b"] == nil || p.open[0]["a"] != nil {
		t.Fatalf("before rollback: done %d, open %v", len(p.done), p.open[0])
	}
	if err := p.rollback(); err != nil {
		t.Fatal(err)
	}
	if p.open[0]["a"] != a || p.open[0]["b"] != nil || len(p.done) != 0 || a.size != size || a.streams["caller-audio"].next != 2 {
		t.Fatalf("after rollback: open %v, size %d (want %d)", p.open[0], a.size, size)
	}
	if fi, err := a.spool.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("spool is %d bytes, want %d (%v)", fi.Size(), size, err)
	}
	// The records come again; this time the transaction commits.
	for _, r := range txn {
		p.apply(r, false)
	}
	if len(p.done) != 1 || p.done[0].c != a || a.streams["caller-audio"].received != 3 || p.txn.Duplicates != 0 {
		t.Fatalf("after re-reading: done %d, received %d, duplicates %d", len(p.done), a.streams["caller-audio"].received, p.txn.Duplicates)
	}
}
