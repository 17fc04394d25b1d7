package ingest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestLiveLoopbackSIPp records, from the loopback interface, a call that
// two real SIP user agents place: SIPp's uac_pcap scenario (which plays
// its G.711 A-law sample as RTP, and RFC 2833 digits) calls SIPp's uas.
// It needs root (AF_PACKET) and sipp (`make test` installs sip-tester).
func TestLiveLoopbackSIPp(t *testing.T) {
	stacktest.Env(t, "VERBATIM_INTEGRATION")
	if os.Geteuid() != 0 {
		t.Fatal("live capture needs root (CAP_NET_RAW)")
	}
	sipp, dir := stacktest.SIPp(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	rep, out := ingestRun(t, cluster.ListenAddrs(), kr, "demo", func(ctx context.Context, cfg ingest.Config) (ingest.Report, error) {
		cctx, stop := context.WithCancel(ctx)
		ready := make(chan struct{})
		type result struct {
			rep ingest.Report
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := ingest.Live(cctx, cfg, ingest.LiveConfig{Interface: "lo", Ready: func() { close(ready) },
				// Only this test's ports: other tests' calls use loopback too.
				Filter: stacktest.BPF(t, "udp and portrange 15070-15099")})
			done <- result{r, err}
		}()
		select {
		case <-ready:
		case r := <-done:
			stop()
			return r.rep, r.err
		}
		uas := exec.CommandContext(ctx, sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", "15070", "-mp", "15080", "-m", "1", "-nostdin")
		uas.Dir = dir
		if err := uas.Start(); err != nil {
			t.Fatal(err)
		}
		stacktest.WaitUDPBound(ctx, t, 15070) // the uas listens before the INVITE
		uac := exec.CommandContext(ctx, sipp, "-sn", "uac_pcap", "127.0.0.1:15070", "-i", "127.0.0.1", "-p", "15071", "-mp", "15090", "-m", "1", "-nostdin")
		uac.Dir = dir
		if b, err := uac.CombinedOutput(); err != nil {
			t.Logf("%s", b[max(0, len(b)-2000):])
			t.Fatalf("sipp uac: %v", err)
		}
		if err := uas.Wait(); err != nil {
			t.Fatalf("sipp uas: %v", err)
		}
		stop() // the call is over: stop capturing
		r := <-done
		return r.rep, r.err
	})
	t.Logf("report: calls %d, RTP %d, SIP %+v, kernel drops %d", rep.Calls, rep.RTPPackets, rep.SIP, rep.KernelDrops)
	if rep.Calls != 1 || len(out.ended) != 1 || rep.KernelDrops != 0 {
		t.Fatalf("calls %d, ended %d, drops %d", rep.Calls, len(out.ended), rep.KernelDrops)
	}
	for id, e := range out.ended {
		if e.GetReason() != verbatimv1.EndReason_END_REASON_BYE {
			t.Fatalf("ended by %v", e.GetReason())
		}
		if src := out.started[id].GetSource(); src != verbatimv1.CaptureSource_CAPTURE_SOURCE_LIVE_INTERFACE {
			t.Fatalf("a live capture's call says it came from %v", src)
		}
		var n uint32
		for _, b := range out.batches[id] {
			n += b.GetPacketCount()
		}
		// g711a.pcap holds 236 A-law packets; the digits add events.
		if n < 236 {
			t.Fatalf("%d RTP packets recorded, want at least the sample's 236", n)
		}
	}
}
