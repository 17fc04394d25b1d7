package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadtestWritesACapture: `verbatim loadtest` writes a capture that
// `verbatim ingest pcap` would read, and says what it holds; without -o it
// refuses with a usage.
func TestLoadtestWritesACapture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "load.pcap")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"loadtest", "--calls", "3", "--duration", "1s", "-o", path}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "3 calls, 300 RTP packets (300 per second), 15 SIP messages") {
		t.Fatalf("output %q", out.String())
	}
	if b, err := os.ReadFile(path); err != nil || len(b) < 300*200 {
		t.Fatalf("capture of %d bytes: %v", len(b), err)
	}
	if err := run(context.Background(), []string{"loadtest", "--calls", "3"}, &out, &errb); err == nil || !strings.Contains(errb.String(), "usage") {
		t.Fatalf("without -o: %v", err)
	}
	if err := run(context.Background(), []string{"loadtest", "--calls", "0", "-o", path}, &out, &errb); err == nil {
		t.Fatal("0 calls accepted")
	}
}
