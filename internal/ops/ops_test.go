package ops_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/verbatimrec/verbatim/internal/ops"
)

// TestServer: /healthz answers while the process serves; /readyz names
// each failing check with 503 and answers 200 once they pass; /metrics
// carries the role's own metrics and the build's; a non-loopback address
// is refused unless allowed.
func TestServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := ops.New("process", "r1 test")
	var n atomic.Int64
	s.CounterFunc("process", "recordings_stored_total", "test", func() float64 { return float64(n.Load()) })
	var down atomic.Bool
	down.Store(true)
	s.Check("kafka", func(context.Context) error {
		if down.Load() {
			return errors.New("kafka: dial tcp 127.0.0.1:1: connection refused")
		}
		return nil
	})
	s.Check("clickhouse", func(context.Context) error { return nil })
	addr, err := s.Serve(ctx, "127.0.0.1:0", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "verbatim process is running") {
		t.Fatalf("healthz: %d %s", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "not ready: kafka: kafka: dial tcp") || strings.Contains(body, "clickhouse") {
		t.Fatalf("readyz with kafka down: %d %s", code, body)
	}
	down.Store(false)
	n.Store(7)
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}
	code, body := get("/metrics")
	for _, want := range []string{"verbatim_process_recordings_stored_total 7", `verbatim_build_info{revision="r1 test",role="process"} 1`, "go_goroutines ", "\nprocess_cpu_seconds_total "} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q: %d\n%s", want, code, body)
		}
	}
	if _, err := s.Serve(ctx, "0.0.0.0:0", false, nil); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("a remote address: %v", err)
	}
}
