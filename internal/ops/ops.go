// Package ops serves what operators watch of a long-running role: its
// Prometheus metrics (/metrics: the role's own, its Kafka clients' through
// franz-go's kprom, the Go runtime's and the process's), its liveness
// (/healthz: the process serves) and its readiness (/readyz: every check
// the role registered passes, each failure named).
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/verbatimrec/verbatim/internal/loopback"
)

// Namespace prefixes every metric Verbatim exports.
const Namespace = "verbatim"

// checkTimeout bounds one readiness check.
const checkTimeout = 2 * time.Second

// Server is one role's operations endpoint.
type Server struct {
	// Registry holds the role's metrics; register more on it.
	Registry *prometheus.Registry
	role     string
	mu       sync.Mutex
	checks   map[string]func(context.Context) error
}

// New returns the endpoint of role ("process", "project"...), with the
// Go and process collectors (go_*, process_*) and verbatim_build_info
// registered.
func New(role, revision string) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info", Help: "The role and revision of this process: always 1.",
		ConstLabels: prometheus.Labels{"role": role, "revision": revision}})
	info.Set(1)
	reg.MustRegister(info)
	return &Server{Registry: reg, role: role, checks: map[string]func(context.Context) error{}}
}

// Check adds a readiness check: /readyz answers 503 while it fails.
func (s *Server) Check(name string, fn func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = fn
}

// Ready runs every check at once and returns the failures, by name.
func (s *Server) Ready(ctx context.Context) map[string]error {
	s.mu.Lock()
	checks := make(map[string]func(context.Context) error, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := map[string]error{}
	for name, fn := range checks {
		wg.Add(1)
		go func() { // joined by wg.Wait below
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			if err := fn(cctx); err != nil {
				mu.Lock()
				failed[name] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// Handler serves /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ok: verbatim %s is running\n", s.role)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		failed := s.Ready(r.Context())
		if len(failed) == 0 {
			fmt.Fprintf(w, "ready: verbatim %s\n", s.role)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		names := make([]string, 0, len(failed))
		for n := range failed {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(w, "not ready: %s: %v\n", n, failed[n])
		}
	})
	return mux
}

// Serve listens on addr (host:port; port 0 picks one) and serves until
// ctx ends; it returns the address it listens on. A non-loopback address
// is refused unless allowRemote: the endpoint has no authentication, so
// it is for a local scraper or a cluster network a policy guards.
func (s *Server) Serve(ctx context.Context, addr string, allowRemote bool, log *slog.Logger) (net.Addr, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("ops: --ops-addr %q: %w", addr, err)
	}
	if !allowRemote && !loopback.HostPort(addr) {
		return nil, fmt.Errorf("ops: --ops-addr %q is not a loopback address: the endpoint has no authentication (allow it with --ops-remote where a network policy guards it)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { // ends when ctx does: Shutdown below closes the listener
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("ops endpoint stopped", "err", err)
		}
	}()
	go func() { // ends with ctx
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), nil
}

// CounterFunc registers a counter whose value fn reads (a running total
// the role keeps, e.g. from its Stats).
func (s *Server) CounterFunc(subsystem, name, help string, fn func() float64) {
	s.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help}, fn))
}

// GaugeFunc registers a gauge whose value fn reads.
func (s *Server) GaugeFunc(subsystem, name, help string, fn func() float64) {
	s.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: subsystem, Name: name, Help: help}, fn))
}

// Total is one running total of a role's statistics T.
type Total[T any] struct {
	Name, Help string
	Value      func(*T) uint64
}

// Totals registers each total as a counter of subsystem read from the
// statistics last holds (the role stores its latest report there).
func Totals[T any](s *Server, subsystem string, last *atomic.Pointer[T], totals []Total[T]) {
	for _, m := range totals {
		s.CounterFunc(subsystem, m.Name, m.Help, func() float64 { return float64(m.Value(last.Load())) })
	}
}
