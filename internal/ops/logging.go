package ops

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// LogSettings say how a role logs: its level and its format.
type LogSettings struct {
	Level  slog.Level
	Format string // "text" or "json"
}

// ParseLogSettings reads a level (debug, info, warn, error) and a format
// (text, json).
func ParseLogSettings(level, format string) (LogSettings, error) {
	var s LogSettings
	if err := s.Level.UnmarshalText([]byte(level)); err != nil {
		return s, fmt.Errorf("log level %q: debug, info, warn or error", level)
	}
	switch f := strings.ToLower(format); f {
	case "text", "json":
		s.Format = f
	default:
		return s, fmt.Errorf("log format %q: text or json", format)
	}
	return s, nil
}

// Logger is a logger to w with s's level and format, its records of the
// same message at warning level or below limited to burst a minute (the
// per-packet warnings of a flood), the rest counted and said with the
// next one let through.
func (s LogSettings) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: s.Level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if s.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(RateLimited(h, 10, time.Minute))
}

// RateLimited passes at most burst records of each message (at warning
// level or below) per period to h; errors always pass. A record let
// through after some were held back carries suppressed=N.
func RateLimited(h slog.Handler, burst int, period time.Duration) slog.Handler {
	return &limited{h: h, burst: burst, period: period, state: &limitState{msgs: map[string]*window{}}}
}

type limited struct {
	h      slog.Handler
	burst  int
	period time.Duration
	state  *limitState
}

type limitState struct {
	mu   sync.Mutex
	msgs map[string]*window
}

type window struct {
	start      time.Time
	n          int
	suppressed int
}

// maxMessages bounds the messages tracked: past it, windows start over.
const maxMessages = 1024

func (l *limited) Enabled(ctx context.Context, lv slog.Level) bool { return l.h.Enabled(ctx, lv) }

func (l *limited) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		st := l.state
		st.mu.Lock()
		w := st.msgs[r.Message]
		if w == nil || r.Time.Sub(w.start) >= l.period {
			if w == nil && len(st.msgs) >= maxMessages {
				clear(st.msgs)
			}
			held := 0
			if w != nil {
				held = w.suppressed
			}
			w = &window{start: r.Time, suppressed: held}
			st.msgs[r.Message] = w
		}
		w.n++
		if w.n > l.burst {
			w.suppressed++
			st.mu.Unlock()
			return nil
		}
		held := w.suppressed
		w.suppressed = 0
		st.mu.Unlock()
		if held > 0 {
			r = r.Clone()
			r.AddAttrs(slog.Int("suppressed", held))
		}
	}
	return l.h.Handle(ctx, r)
}

func (l *limited) WithAttrs(as []slog.Attr) slog.Handler {
	return &limited{h: l.h.WithAttrs(as), burst: l.burst, period: l.period, state: l.state}
}

func (l *limited) WithGroup(name string) slog.Handler {
	return &limited{h: l.h.WithGroup(name), burst: l.burst, period: l.period, state: l.state}
}
