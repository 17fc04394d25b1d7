package loadtest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/loadtest"
)

// discard is a producer that accepts every record at once: the benchmark
// measures the capture path, not Kafka.
type discard struct{ records, bytes uint64 }

func (d *discard) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	d.records++
	d.bytes += uint64(len(r.Value))
	if promise != nil {
		promise(r, nil)
	}
}

func (d *discard) Flush(context.Context) error { return nil }

// TestCaptureIsRecorded: the generated capture is read by ingest as the
// calls it describes, each set up, talking both ways, and ended by BYE.
func TestCaptureIsRecorded(t *testing.T) {
	var buf bytes.Buffer
	st, err := loadtest.WritePcap(&buf, loadtest.Config{Calls: 50, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if st.RTPPackets != 50*2*100 || st.SIPMessages != 50*5 {
		t.Fatalf("generated %+v", st)
	}
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ingest.Pcap(context.Background(), ingest.Config{Tenant: "load", Keys: kr, Producer: &discard{}}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 50 || rep.RTPOnlyCalls != 0 || rep.RTPPackets != st.RTPPackets || rep.SIP.Malformed != 0 || rep.UnmatchedUDP != 0 || rep.BadRTP != 0 {
		t.Fatalf("ingest: %+v", rep)
	}
	if _, err := loadtest.WritePcap(&buf, loadtest.Config{Calls: 0, Duration: time.Second}); err == nil {
		t.Fatal("0 calls accepted")
	}
}

// BenchmarkIngest runs the whole capture path (pcap reading, SIP dialog
// tracking, RTP demultiplexing and batching, sealing each 1 s batch under
// the call's key, records out) over N concurrent calls for 3 s. Set up
// and teardown are in the run too; the steady state is most of it.
func BenchmarkIngest(b *testing.B) {
	for _, calls := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("calls=%d", calls), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "load.pcap")
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			st, err := loadtest.WritePcap(f, loadtest.Config{Calls: calls, Duration: 3 * time.Second})
			if err == nil {
				err = f.Close()
			}
			if err != nil {
				b.Fatal(err)
			}
			kr, err := keys.OpenKeyring(filepath.Join(b.TempDir(), "keyring.json"))
			if err != nil {
				b.Fatal(err)
			}
			total := st.RTPPackets + st.SIPMessages
			var peakHeap uint64
			// The steady state: between a third and two thirds of the
			// capture every call is open and only media flows.
			var steady [2]struct{ frames, mallocs, bytes uint64 }
			var before, after runtime.MemStats
			b.ResetTimer()
			runtime.ReadMemStats(&before)
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				steady = [2]struct{ frames, mallocs, bytes uint64 }{}
				cfg := ingest.Config{Tenant: "load", Keys: kr, Producer: &discard{}, ProgressEvery: 20_000,
					Progress: func(r ingest.Report) {
						var m runtime.MemStats
						runtime.ReadMemStats(&m)
						peakHeap = max(peakHeap, m.HeapInuse)
						for i, at := range []uint64{total / 3, 2 * total / 3} {
							if steady[i].frames == 0 && r.Pcap.Frames >= at {
								steady[i].frames, steady[i].mallocs, steady[i].bytes = r.Pcap.Frames, m.Mallocs, m.TotalAlloc
							}
						}
					}}
				rep, err := ingest.Pcap(context.Background(), cfg, f)
				f.Close()
				if err != nil || rep.RTPPackets != st.RTPPackets || rep.Calls != calls {
					b.Fatalf("ingest: %v, %+v", err, rep)
				}
			}
			runtime.ReadMemStats(&after)
			pkts := float64(b.N) * float64(st.RTPPackets+st.SIPMessages)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/pkts, "ns/packet")
			b.ReportMetric(pkts/b.Elapsed().Seconds(), "packets/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/pkts, "allocs/packet")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/pkts, "B/packet")
			b.ReportMetric(float64(peakHeap)/float64(calls), "heap-B/call")
			if n := float64(steady[1].frames - steady[0].frames); n > 0 {
				b.ReportMetric(float64(steady[1].mallocs-steady[0].mallocs)/n, "steady-allocs/packet")
				b.ReportMetric(float64(steady[1].bytes-steady[0].bytes)/n, "steady-B/packet")
			}
		})
	}
}
