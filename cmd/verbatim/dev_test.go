package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevRecordsWhatIsIngested: with `verbatim dev` running, ingesting a
// capture is all it takes: its process role stores the recordings.
func TestDevRecordsWhatIsIngested(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := t.TempDir()
	devCtx, stopDev := context.WithCancel(ctx)
	var out, errb syncBuffer
	devErr := make(chan error, 1)
	go func() {
		devErr <- run(devCtx, []string{"dev", "--data", data, "--kafka-port", "0", "--clickhouse", ""}, &out, &errb)
	}()
	addr := regexp.MustCompile(`kafka\s+(127\.0\.0\.1:\d+)`)
	var brokers string
	for brokers == "" {
		select {
		case err := <-devErr:
			t.Fatalf("dev exited: %v\n%s%s", err, out.String(), errb.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := addr.FindStringSubmatch(out.String()); m != nil && strings.Contains(out.String(), "running") {
			brokers = m[1]
		}
	}
	if _, err := runOut(ctx, "ingest", "pcap", "--brokers", brokers, "--keyring", filepath.Join(data, "keyring.json"),
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap")); err != nil {
		t.Fatal(err)
	}
	// Wait for the two recordings (and their raw media) to be stored.
	for {
		wavs, _ := filepath.Glob(filepath.Join(data, "objects", "demo", "2016", "11", "26", "*", "*.wav.sealed"))
		raws, _ := filepath.Glob(filepath.Join(data, "objects", "demo", "2016", "11", "26", "*", "*.rtp.sealed"))
		if len(wavs) == 2 && len(raws) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("recordings not stored: %v %v\n%s%s", wavs, raws, out.String(), errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopDev()
	if err := <-devErr; err != nil {
		t.Fatalf("dev: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "role      process") {
		t.Fatalf("dev did not say it runs the process role:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "spool")); err != nil {
		t.Fatal(err)
	}
}
