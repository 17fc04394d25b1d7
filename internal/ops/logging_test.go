package ops_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/ops"
)

// TestRateLimited: of 1,000 warnings of one message in a minute, ten pass;
// the next one after the minute says how many were held back; another
// message and every error pass.
func TestRateLimited(t *testing.T) {
	var buf bytes.Buffer
	s, err := ops.ParseLogSettings("info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log := s.Logger(&buf)
	t0 := time.Now()
	h := log.Handler()
	rec := func(at time.Time, lv slog.Level, msg string) {
		if err := h.Handle(t.Context(), slog.NewRecord(at, lv, msg, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		rec(t0.Add(time.Duration(i)*time.Millisecond), slog.LevelWarn, "not an RTP packet")
	}
	rec(t0.Add(time.Second), slog.LevelWarn, "another")
	for range 3 {
		rec(t0.Add(time.Second), slog.LevelError, "Kafka refused a record")
	}
	rec(t0.Add(61*time.Second), slog.LevelWarn, "not an RTP packet")
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		lines = append(lines, m)
	}
	count := map[string]int{}
	for _, m := range lines {
		count[m["msg"].(string)]++
	}
	if count["not an RTP packet"] != 11 || count["another"] != 1 || count["Kafka refused a record"] != 3 {
		t.Fatalf("passed %v", count)
	}
	if last := lines[len(lines)-1]; last["suppressed"] != float64(990) {
		t.Fatalf("the record after the minute: %v", last)
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "xml"}} {
		if _, err := ops.ParseLogSettings(bad[0], bad[1]); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
