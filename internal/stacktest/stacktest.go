// Package stacktest gates integration tests on the real local stack
// (deploy/local). Tests call Env for each setting they need: without
// VERBATIM_INTEGRATION=1 the test is skipped; with it, a missing setting
// fails the test, so a misconfigured CI run cannot pass by skipping.
package stacktest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Env returns the value of the environment variable name, skipping the test
// when integration tests are off and failing it when the variable is unset.
func Env(t testing.TB, name string) string {
	t.Helper()
	if os.Getenv("VERBATIM_INTEGRATION") != "1" {
		t.Skip("integration test: run `make test`, or source .stack/env.sh and set VERBATIM_INTEGRATION=1")
	}
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("VERBATIM_INTEGRATION=1 but %s is not set: source the env.sh that `make up` writes", name)
	}
	return v
}

// SharedTestdata returns the path of a file in ../shared/testdata, the
// third-party captures and vectors beside the repository (described in its
// MANIFEST.md). It fails the test when the folder is not there.
func SharedTestdata(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		// Verbatim's own go.mod, not that of a module under deploy/.
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/verbatimrec/verbatim\n") {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data missing (the repository expects ../shared/testdata beside it): %v", err)
	}
	return p
}

// SIPp returns the sipp binary and a working directory holding, under
// pcap/, the captures its uac_pcap scenario plays (g711a.pcap and the
// RFC 2833 digits; Debian ships them in /usr/share/sip-tester).
func SIPp(t testing.TB) (sipp, dir string) {
	t.Helper()
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("sipp not installed: make test installs Debian's sip-tester")
	}
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pcap"), 0o755); err != nil {
		t.Fatal(err)
	}
	samples, _ := filepath.Glob("/usr/share/sip-tester/*.pcap")
	for _, f := range samples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "pcap", filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return sipp, dir
}

// WaitUDPBound returns once something listens on UDP port of 127.0.0.1
// (/proc/net/udp): a wait for a user agent to bind ends on that, not on a
// sleep.
func WaitUDPBound(ctx context.Context, t testing.TB, port int) {
	t.Helper()
	want := fmt.Sprintf(":%04X 00000000:0000", port)
	for {
		if b, err := os.ReadFile("/proc/net/udp"); err == nil && strings.Contains(string(b), want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nothing bound UDP port %d", port)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BPF compiles a tcpdump filter expression for interface lo into the
// `tcpdump -ddd` form ingest's live capture takes.
func BPF(t testing.TB, expr string) string {
	t.Helper()
	out, err := exec.Command("tcpdump", "-i", "lo", "-ddd", expr).Output()
	if err != nil {
		t.Fatalf("tcpdump -ddd %q (make test installs tcpdump): %v", expr, err)
	}
	return strings.TrimSpace(string(out))
}
