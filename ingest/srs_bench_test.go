package ingest_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// discard is a producer that acknowledges every record at once: the
// benchmark measures the SRS, not Kafka.
type discard struct{ records atomic.Int64 }

func (d *discard) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	d.records.Add(1)
	promise(r, nil)
}

func (*discard) Flush(context.Context) error { return nil }

// BenchmarkSRS records SIPREC sessions sent over loopback: sessions
// concurrent two-stream G.711 sessions, each stream b.N packets of 20 ms,
// sent by another process (so that this one's CPU time is the SRS's alone:
// SIP, RTP receive, batching and sealing, records out) at
// VERBATIM_BENCH_PPS packets a second (default 100,000). It reports the
// SRS's CPU per recorded call-second, the packets a second received, and
// the packets lost (which must be none for the CPU figure to mean
// anything). VERBATIM_BENCH_LINGER sets SRSConfig.Linger.
func BenchmarkSRS(b *testing.B) {
	for _, sessions := range []int{100, 1000} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) { benchSRS(b, sessions) })
	}
}

func benchSRS(b *testing.B, sessions int) {
	kr, err := keys.OpenKeyring(filepath.Join(b.TempDir(), "keyring.json"))
	if err != nil {
		b.Fatal(err)
	}
	pps := 100_000
	if v, err := strconv.Atoi(os.Getenv("VERBATIM_BENCH_PPS")); err == nil && v > 0 {
		pps = v
	}
	linger, _ := time.ParseDuration(os.Getenv("VERBATIM_BENCH_LINGER")) // default: the SRS's
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan []string, 1)
	type result struct {
		rep ingest.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, _, err := ingest.SIPREC(ctx, ingest.Config{Tenant: "bench", Keys: kr, Producer: &discard{}},
			ingest.SRSConfig{Listen: []string{"tcp:127.0.0.1:0"}, PortMin: 30000, PortMax: 39999, MaxSessions: 2 * sessions,
				InviteRate: 1e6, InviteBurst: 1e6, Linger: linger, Ready: func(ls []string) { ready <- ls }})
		done <- result{rep, err}
	}()
	src := stacktest.NewSRC(b, (<-ready)[0], nil)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	var targets []string
	var open []*stacktest.SRCSession
	for range sessions {
		ct, body := stacktest.SIPRECBody(offerSDP(netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.1:11")), metadataDoc(""))
		sess, res, err := src.Invite(ctx, ct, body)
		if err != nil || sess == nil {
			b.Fatalf("session: %v %v", err, res)
		}
		for _, p := range sess.Ports() {
			targets = append(targets, p.String())
		}
		open = append(open, sess)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	list := filepath.Join(b.TempDir(), "targets")
	if err := os.WriteFile(list, []byte(strings.Join(targets, "\n")), 0o600); err != nil {
		b.Fatal(err)
	}
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	began := time.Now()
	b.ResetTimer()
	sender := exec.Command(os.Args[0], "-test.run=^TestSRSBenchSender$")
	sender.Env = append(os.Environ(), "VERBATIM_BENCH_SENDER="+list, fmt.Sprintf("VERBATIM_BENCH_PACKETS=%d", b.N), fmt.Sprintf("VERBATIM_BENCH_PPS=%d", pps))
	if out, err := sender.CombinedOutput(); err != nil {
		b.Fatalf("sender: %v\n%s", err, out)
	}
	sendTime := time.Since(began)
	for _, sess := range open { // the SRS reads what is queued before it ends each
		if err := sess.D.Bye(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
	r := <-done
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if r.err != nil {
		b.Fatal(r.err)
	}
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	sent := uint64(b.N) * uint64(len(targets))
	callSeconds := float64(r.rep.RTPPackets) * 0.020 / 2 // two streams a call
	b.ReportMetric(float64(cpu.Microseconds())/max(callSeconds, 1e-9), "cpu-µs/call-s")
	b.ReportMetric(float64(r.rep.RTPPackets)/sendTime.Seconds(), "packets/s")
	b.ReportMetric(float64(sent-min(sent, r.rep.RTPPackets)), "lost")
	b.ReportMetric(float64(cpu.Microseconds())/max(float64(r.rep.RTPPackets), 1), "cpu-µs/packet")
	// Heap held by an open session (both sides of the test SRC's dialog
	// are in this process: an upper bound), before any media.
	b.ReportMetric(float64(int64(m1.HeapInuse)-int64(m0.HeapInuse))/float64(sessions)/1024, "heap-KiB/session")
}

// TestSRSBenchSender is BenchmarkSRS's sender, run in a process of its own;
// it does nothing in a normal test run.
func TestSRSBenchSender(t *testing.T) {
	list := os.Getenv("VERBATIM_BENCH_SENDER")
	if list == "" {
		t.Skip("BenchmarkSRS's sender")
	}
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(os.Getenv("VERBATIM_BENCH_PACKETS"))
	pps, _ := strconv.Atoi(os.Getenv("VERBATIM_BENCH_PPS"))
	var dsts []netip.AddrPort
	for _, l := range strings.Split(string(b), "\n") {
		dsts = append(dsts, netip.MustParseAddrPort(l))
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pkts := make([][]byte, len(dsts))
	began := time.Now()
	sent := 0
	for seq := range n {
		for i, d := range dsts {
			pkts[i] = stacktest.AudioPacket(uint32(i+1), uint16(seq), 0, byte(i))
			if _, err := conn.WriteToUDPAddrPort(pkts[i], d); err != nil {
				t.Fatal(err)
			}
			sent++
			if sent%200 == 0 {
				if ahead := time.Duration(sent)*time.Second/time.Duration(pps) - time.Since(began); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
	}
}
