package processors

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/processors/internal/g711"
	"github.com/verbatimrec/verbatim/processors/internal/g722"
	"github.com/verbatimrec/verbatim/processors/internal/g729"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// batchOf seals 20 ms PCMU packets seq first..first+n-1 (skipping lost)
// as one PacketBatch, the way ingest does.
func batchOf(t *testing.T, s *seal.Sealer, stream string, ssrc uint32, first, n int, at time.Time, lost map[int]bool, fill byte) *verbatimv1.PacketBatch {
	t.Helper()
	return batchPT(t, s, 0, stream, ssrc, first, n, at, lost, fill)
}

// batchPT is batchOf with packets of payload type pt.
func batchPT(t *testing.T, s *seal.Sealer, pt uint8, stream string, ssrc uint32, first, n int, at time.Time, lost map[int]bool, fill byte) *verbatimv1.PacketBatch {
	t.Helper()
	var plain []byte
	var offs []uint32
	for i := first; i < first+n; i++ {
		if lost[i] {
			continue
		}
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: ssrc},
			Payload: bytes.Repeat([]byte{fill + byte(i%8)}, 160)}
		b, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		plain = schemas.AppendPacket(plain, b)
		offs = append(offs, uint32((i-first)*20000))
	}
	sealed, err := s.Seal(nil, schemas.SealedRTPPackets, plain)
	if err != nil {
		t.Fatal(err)
	}
	return &verbatimv1.PacketBatch{CallId: "call-1", StreamId: stream, Ssrc: ssrc, FirstSequence: uint64(first),
		LastSequence: uint64(first + n - 1), PacketCount: uint32(len(offs)), FirstArrivalUnixNano: at.UnixNano(),
		ArrivalOffsetsUs: offs, Packets: sealed}
}

func TestCallRecording(t *testing.T) {
	ctx := context.Background()
	f := newRecFixture(t)
	dir, kr, store, s := f.dir, f.kr, f.store, f.s
	pcmu := []*verbatimv1.Codec{{PayloadType: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}}
	streams := []*verbatimv1.Stream{
		{StreamId: "caller-audio", ParticipantId: "caller", Codecs: pcmu},
		{StreamId: "callee-audio", ParticipantId: "callee", Codecs: pcmu},
	}
	t0 := f.t0
	rec, err := newCallRecording("demo", "call-1", streams, t0, s, dir, recordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Caller: 100 packets (2 s), seq 10 lost. Callee starts 500 ms later,
	// 50 packets. Batches of 50 packets, in the order ingest emits them.
	lost := map[int]bool{10: true}
	for _, b := range []*verbatimv1.PacketBatch{
		batchOf(t, s, "caller-audio", 1, 0, 50, t0, lost, 0x10),
		batchOf(t, s, "callee-audio", 2, 1000, 50, t0.Add(500*time.Millisecond), nil, 0x60),
		batchOf(t, s, "caller-audio", 1, 50, 50, t0.Add(time.Second), lost, 0x10),
	} {
		if err := rec.batch(b); err != nil {
			t.Fatal(err)
		}
	}
	ev, dk, err := rec.finish(ctx, kr, store, "rec-1", "demo/2016/11/24/call-1/rec-1", &verbatimv1.MediaEnded{})
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetChannels() != 2 || ev.GetDuration().AsDuration() != 2*time.Second {
		t.Fatalf("event %v", ev)
	}
	var caller *verbatimv1.StreamCompleteness
	for _, c := range ev.GetCompleteness() {
		if c.GetStreamId() == "caller-audio" {
			caller = c
		}
	}
	if caller.GetPacketsInRecording() != 99 || len(caller.GetGaps()) != 1 || caller.GetGaps()[0].GetFirst() != 10 {
		t.Fatalf("caller completeness %v", caller)
	}
	// The ledger: the caller's lost packet is known missing though never
	// captured, so the recording is partial, not complete.
	if c := schemas.Summarize(ev.GetLedgers()); c.Status != schemas.StatusPartial || c.AudioRecorded != 149 || c.AudioExpected != 150 ||
		c.Missing["never_captured"] != 1 {
		t.Fatalf("completeness %+v (%s), ledgers %v", c, c, ev.GetLedgers())
	}

	// Read the object back: hashes match the event, and it opens to a WAV
	// whose channels hold each side's audio, aligned by arrival.
	rc, _, err := store.Get(ctx, ev.GetObjectKey())
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := io.ReadAll(rc)
	rc.Close()
	if sum := sha256.Sum256(sealed); !bytes.Equal(sum[:], ev.GetCiphertextSha256()) || uint64(len(sealed)) != ev.GetCiphertextSize() {
		t.Fatal("ciphertext hash or size differs from the event")
	}
	if bytes.Contains(sealed, []byte("RIFF")) {
		t.Fatal("stored object holds a plaintext WAV header")
	}
	r, err := seal.NewStreamReader(bytes.NewReader(sealed), dk.Plaintext, recordingAAD("demo", ev.GetObjectKey()))
	if err != nil {
		t.Fatal(err)
	}
	wavBytes, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(wavBytes); !bytes.Equal(sum[:], ev.GetPlaintextSha256()) {
		t.Fatal("plaintext hash differs from the event")
	}
	if string(wavBytes[:4]) != "RIFF" || binary.LittleEndian.Uint32(wavBytes[40:]) != uint32(len(wavBytes)-44) {
		t.Fatalf("bad WAV header % x", wavBytes[:44])
	}
	frame := func(i int) (l, r int16) {
		o := 44 + 4*i
		return int16(binary.LittleEndian.Uint16(wavBytes[o:])), int16(binary.LittleEndian.Uint16(wavBytes[o+2:]))
	}
	want := func(code byte) int16 { return g711.DecodeUlaw(nil, []byte{code})[0] }
	if l, r := frame(0); l != want(0x10) || r != 0 {
		t.Fatalf("frame 0 = %d,%d: caller's first sample on the left, silence on the right", l, r)
	}
	if l, _ := frame(10*160 + 5); l != 0 {
		t.Fatalf("lost packet 10 is not silence: %d", l)
	}
	if _, r := frame(4000); r != want(0x60) { // 500 ms: the callee starts
		t.Fatalf("callee not aligned at 500 ms: %d", r)
	}
	if _, r := frame(3999); r != 0 {
		t.Fatalf("callee audio before it started: %d", r)
	}
}

// BenchmarkRecordingBatch is the assembly hot path: one sealed PacketBatch
// of one second of G.711 (50 packets) in, opened, ordered, decoded, mixed
// into stereo and written to the sealed spool. It reports the cost per
// packet; the stereo spool grows by 32 KB per batch.
func BenchmarkRecordingBatch(b *testing.B) {
	t := &testing.T{}
	dir := b.TempDir()
	key := make([]byte, seal.KeySize)
	s, err := seal.New("demo", "dk-call-1", key)
	if err != nil {
		b.Fatal(err)
	}
	pcmu := []*verbatimv1.Codec{{PayloadType: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}}
	streams := []*verbatimv1.Stream{
		{StreamId: "caller-audio", ParticipantId: "caller", Codecs: pcmu},
		{StreamId: "callee-audio", ParticipantId: "callee", Codecs: pcmu},
	}
	t0 := time.Unix(1_480_000_000, 0)
	// Batches alternate between the two directions, as on the media topic.
	const batches = 512
	pbs := make([]*verbatimv1.PacketBatch, batches)
	for i := range pbs {
		stream, ssrc, fill := "caller-audio", uint32(1), byte(0x10)
		if i%2 == 1 {
			stream, ssrc, fill = "callee-audio", 2, 0x60
		}
		pbs[i] = batchOf(t, s, stream, ssrc, (i/2)*50, 50, t0.Add(time.Duration(i/2)*time.Second), nil, fill)
	}
	rec, err := newCallRecording("demo", "call-1", streams, t0, s, dir, recordOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer rec.abandon()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%batches == 0 {
			b.StopTimer()
			rec.abandon()
			if rec, err = newCallRecording("demo", "call-1", streams, t0, s, dir, recordOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if err := rec.batch(pbs[i%batches]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*50), "ns/packet")
}

func TestDecoders(t *testing.T) {
	st := &verbatimv1.Stream{Codecs: []*verbatimv1.Codec{
		{PayloadType: 0, Name: "PCMU"}, {PayloadType: 8, Name: "pcma"}, {PayloadType: 97, Name: "L16", ClockRate: 8000, Channels: 1},
		{PayloadType: 98, Name: "L16", ClockRate: 44100, Channels: 2}, {PayloadType: 18, Name: "G729"}, {PayloadType: 101, Name: "telephone-event"},
		{PayloadType: 9, Name: "G722", ClockRate: 8000},
	}}
	if got := recordingRate([]*verbatimv1.Stream{st}); got != 16000 {
		t.Fatalf("a stream with G.722 gives a %d Hz recording", got)
	}
	if got := recordingRate([]*verbatimv1.Stream{{Codecs: st.Codecs[:3]}}); got != 8000 {
		t.Fatalf("G.711 and L16 give a %d Hz recording", got)
	}
	ds, closeDecs := decoders(st, 8000)
	defer closeDecs()
	want := 4
	if g729.Available {
		want = 5
	}
	if len(ds) != want || ds[0] == nil || ds[8] == nil || ds[97] == nil || ds[9] == nil {
		t.Fatalf("decoders for %v", ds)
	}
	if got := ds[97](nil, []byte{0x12, 0x34, 0xff, 0xfe}); len(got) != 2 || got[0] != 0x1234 || got[1] != -2 {
		t.Fatalf("L16 decoded to %v", got)
	}
	if got := ds[9](nil, make([]byte, 160)); len(got) != 320 {
		t.Fatalf("G.722 decoded 160 octets to %d samples", len(got))
	}
	// In a wideband recording every narrowband codec is upsampled.
	wb, closeWB := decoders(st, 16000)
	defer closeWB()
	if got := wb[0](nil, make([]byte, 160)); len(got) != 320 {
		t.Fatalf("PCMU in a 16 kHz recording: 160 octets to %d samples", len(got))
	}
	if got := wb[97](nil, []byte{0x12, 0x34, 0xff, 0xfe}); len(got) != 4 {
		t.Fatalf("L16 in a 16 kHz recording: 2 samples to %d", len(got))
	}
}

// recFixture is one call's recording under test: a keyring, a store and
// the call's sealer, and the timeline's start.
type recFixture struct {
	t     *testing.T
	dir   string
	kr    *keys.Keyring
	store *objstore.FS
	s     *seal.Sealer
	t0    time.Time
}

func newRecFixture(t *testing.T) *recFixture {
	t.Helper()
	dir := t.TempDir()
	kr, err := keys.OpenKeyring(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := kr.GenerateDataKey(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New("demo", "dk-call-1", key.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return &recFixture{t: t, dir: dir, kr: kr, store: store, s: s, t0: time.Unix(1_480_000_000, 0)}
}

// record records the batches of a call with these streams and returns its
// RecordingStored and the WAV as stored, opened.
func (f *recFixture) record(streams []*verbatimv1.Stream, opts recordOptions, batches ...*verbatimv1.PacketBatch) (*verbatimv1.RecordingStored, []byte) {
	f.t.Helper()
	ctx := context.Background()
	rec, err := newCallRecording("demo", "call-1", streams, f.t0, f.s, f.dir, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, b := range batches {
		if err := rec.batch(b); err != nil {
			f.t.Fatal(err)
		}
	}
	ev, dk, err := rec.finish(ctx, f.kr, f.store, "rec-1", "demo/2016/11/24/call-1/rec-1", &verbatimv1.MediaEnded{})
	if err != nil {
		f.t.Fatal(err)
	}
	rc, _, err := f.store.Get(ctx, ev.GetObjectKey())
	if err != nil {
		f.t.Fatal(err)
	}
	defer rc.Close()
	r, err := OpenRecording(rc, dk.Plaintext, "demo", ev.GetObjectKey())
	if err != nil {
		f.t.Fatal(err)
	}
	wav, err := io.ReadAll(r)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev, wav
}

// TestSSRCChange: the caller's stream changes source mid-call (a transfer:
// new SSRC, sequence numbers from elsewhere). Both sources' audio is
// recorded, the second where it arrived, and neither is taken for late.
func TestSSRCChange(t *testing.T) {
	f := newRecFixture(t)
	pcmu := []*verbatimv1.Codec{{PayloadType: 0, Name: "PCMU", ClockRate: 8000, Channels: 1}}
	ev, wavBytes := f.record([]*verbatimv1.Stream{{StreamId: "caller-audio", ParticipantId: "caller", Codecs: pcmu}}, recordOptions{},
		batchOf(t, f.s, "caller-audio", 1, 30000, 50, f.t0, nil, 0x10),
		batchOf(t, f.s, "caller-audio", 2, 7, 50, f.t0.Add(3*time.Second), nil, 0x60)) // new source, 2 s of silence before it
	var in, late uint64
	for _, c := range ev.GetCompleteness() {
		in += c.GetPacketsInRecording()
		late += c.GetLate()
	}
	if len(ev.GetCompleteness()) != 2 || in != 100 || late != 0 {
		t.Fatalf("completeness %v", ev.GetCompleteness())
	}
	left := func(i int) int16 { return int16(binary.LittleEndian.Uint16(wavBytes[44+4*i:])) }
	want := func(code byte) int16 { return g711.DecodeUlaw(nil, []byte{code})[0] }
	if left(0) != want(0x10) || left(2*8000) != 0 || left(3*8000) != want(0x60+byte(7%8)) {
		t.Fatalf("samples at 0 s %d, 2 s %d, 3 s %d", left(0), left(2*8000), left(3*8000))
	}
}

// TestWidebandCall: a call with a G.722 side and a G.711 side is recorded
// at 16 kHz: the G.722 channel as decoded, the G.711 channel upsampled,
// both on one timeline (a lost G.722 packet is 320 samples of silence).
func TestWidebandCall(t *testing.T) {
	f := newRecFixture(t)
	streams := []*verbatimv1.Stream{
		{StreamId: "caller-audio", ParticipantId: "caller", Codecs: []*verbatimv1.Codec{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}}},
		{StreamId: "callee-audio", ParticipantId: "callee", Codecs: []*verbatimv1.Codec{{PayloadType: 9, Name: "G722", ClockRate: 8000}}},
	}
	ev, wavBytes := f.record(streams, recordOptions{},
		batchOf(t, f.s, "caller-audio", 1, 0, 50, f.t0, nil, 0x10),
		batchPT(t, f.s, 9, "callee-audio", 2, 0, 50, f.t0, map[int]bool{10: true}, 0x40))
	if ev.GetSampleRate() != 16000 || ev.GetDuration().AsDuration() != time.Second {
		t.Fatalf("recording %d Hz, %v", ev.GetSampleRate(), ev.GetDuration().AsDuration())
	}
	if binary.LittleEndian.Uint32(wavBytes[24:]) != 16000 || len(wavBytes) != 44+4*16000 {
		t.Fatalf("WAV header rate %d, %d bytes", binary.LittleEndian.Uint32(wavBytes[24:]), len(wavBytes))
	}
	sample := func(ch, i int) int16 { return int16(binary.LittleEndian.Uint16(wavBytes[44+4*i+2*ch:])) }
	// The G.711 side: each µ-law sample twice as many times (a constant
	// payload interpolates to itself), two input samples late.
	if want := g711.DecodeUlaw(nil, []byte{0x10 + 3})[0]; sample(0, 3*320+100) != want {
		t.Fatalf("caller at packet 3: %d, want %d", sample(0, 3*320+100), want)
	}
	// The G.722 side: the lost packet is silence, its neighbours are not.
	g := g722.New()
	var want []int16
	for i := range 10 {
		want = g.Decode(want, bytes.Repeat([]byte{0x40 + byte(i%8)}, 160))
	}
	for i, w := range want {
		if got := sample(1, i); got != w {
			t.Fatalf("callee sample %d: %d, want %d", i, got, w)
		}
	}
	for i := 10 * 320; i < 11*320; i++ {
		if sample(1, i) != 0 {
			t.Fatalf("callee sample %d in the lost packet: %d", i, sample(1, i))
		}
	}
	if !slices.ContainsFunc(wavBytes[44+4*11*320:], func(b byte) bool { return b != 0 }) {
		t.Fatal("nothing after the lost packet")
	}
}

// TestComfortNoiseOption: a comfort-noise packet's span holds noise by
// default, and silence when the processor is told so.
func TestComfortNoiseOption(t *testing.T) {
	for _, silentCN := range []bool{false, true} {
		f := newRecFixture(t)
		codecs := []*verbatimv1.Codec{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}, {PayloadType: 13, Name: "CN", ClockRate: 8000}}
		_, wavBytes := f.record([]*verbatimv1.Stream{{StreamId: "caller-audio", ParticipantId: "caller", Codecs: codecs}},
			recordOptions{silentCN: silentCN},
			batchOf(t, f.s, "caller-audio", 1, 0, 10, f.t0, nil, 0xff),                             // speech
			batchPT(t, f.s, 13, "caller-audio", 1, 10, 1, f.t0.Add(200*time.Millisecond), nil, 50), // comfort noise at -50 dBov
			batchOf(t, f.s, "caller-audio", 1, 11, 10, f.t0.Add(220*time.Millisecond), nil, 0xff))
		noisy := 0
		for i := 10 * 160; i < 11*160; i++ { // the comfort-noise packet's 20 ms
			if binary.LittleEndian.Uint16(wavBytes[44+4*i:]) != 0 {
				noisy++
			}
		}
		if silentCN != (noisy == 0) || (!silentCN && noisy < 100) {
			t.Fatalf("silent comfort noise %v: %d of 160 samples not zero", silentCN, noisy)
		}
	}
}

// TestSettleAccountsForEveryStreamSent: a stream ingest sent packets for
// that the recording never saw (no description reached the processor and
// every batch of it was lost) is in the account, all of it lost in
// transit: the recording is partial, never complete without it.
func TestSettleAccountsForEveryStreamSent(t *testing.T) {
	ledgers := []*verbatimv1.StreamLedger{{StreamId: "caller-audio", Captured: 100, Recorded: 100}}
	end := &verbatimv1.MediaEnded{Media: []*verbatimv1.StreamMedia{
		{StreamId: "caller-audio", Batches: 2, Packets: 100},
		{StreamId: "callee-audio", Batches: 2, Packets: 90},
	}}
	got, err := settle(ledgers, end)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].GetStreamId() != "callee-audio" || got[0].GetLostInTransit() != 90 || got[0].GetCaptured() != 90 {
		t.Fatalf("ledgers %v", got)
	}
	if c := schemas.Summarize(got); c.Status != schemas.StatusPartial || c.Missing["lost_in_transit"] != 90 {
		t.Fatalf("%s", c)
	}
}
