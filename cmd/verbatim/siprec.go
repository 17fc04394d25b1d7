package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/devstack"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/ops"
)

// runSIPREC runs the SIPREC recording server until interrupted.
func runSIPREC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("siprec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sc ingest.SRSConfig
	var listen []string
	fs.Func("listen", "SIP listener `udp:HOST:PORT`, tcp:HOST:PORT or tls:HOST:PORT (repeatable; default udp:127.0.0.1:5060 and tcp:127.0.0.1:5060)", func(v string) error {
		listen = append(listen, v)
		return nil
	})
	mediaAddr := fs.String("media-addr", "", "address RTP is received on and announced in answers (default: the first listener's)")
	mediaBind := fs.String("media-bind", "", "address the RTP ports are bound to, when not --media-addr (behind NAT, in a container: 0.0.0.0)")
	ports := fs.String("rtp-ports", "20000-29999", "RTP port range `MIN-MAX`")
	cert := fs.String("tls-cert", "", "certificate (PEM) of tls: listeners")
	key := fs.String("tls-key", "", "its private key (PEM)")
	clientCA := fs.String("tls-client-ca", "", "CA bundle (PEM) that SRC client certificates must chain to: mutual TLS")
	fs.Func("allow-name", "certificate `NAME` an SRC may present over mutual TLS (repeatable; default: any the CA signed)", func(v string) error {
		sc.AllowNames = append(sc.AllowNames, v)
		return nil
	})
	fs.Func("allow-source", "`CIDR` SRCs may send from (repeatable; default: anywhere)", func(v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return err
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		sc.AllowSources = append(sc.AllowSources, p)
		return nil
	})
	fs.BoolVar(&sc.PlainCalls, "plain-calls", false, "record an INVITE that is not a SIPREC session as a plain call (default: refuse it, 488)")
	fs.IntVar(&sc.MaxSessions, "max-sessions", 10_000, "sessions recorded at once; more are refused with 503")
	fs.Float64Var(&sc.InviteRate, "invite-rate", 50, "new sessions a second one source may start; more are refused with 503")
	fs.DurationVar(&sc.AcceptTimeout, "accept-timeout", 3*time.Second, "refuse a new session (503) when Kafka has not stored its key within this long")
	mediaBuffer := fs.Int("media-buffer-mib", 256, "MiB of records waiting for Kafka before every session is ended with a recorded failure")
	fs.DurationVar(&sc.IdleTimeout, "idle-timeout", 5*time.Minute, "end a session with neither SIP nor RTP for this long (paused sessions excepted)")
	digestUser := fs.String("digest-user", "", "require SIP digest authentication of this user; the password is read from env VERBATIM_SIPREC_PASSWORD")
	digestRealm := fs.String("digest-realm", "verbatim", "digest realm")
	inf := addIngestFlags(fs)
	of := addOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(listen) == 0 {
		listen = []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"}
	}
	sc.Listen = listen
	if *mediaAddr != "" {
		a, err := netip.ParseAddr(*mediaAddr)
		if err != nil {
			return fmt.Errorf("siprec: --media-addr: %w", err)
		}
		sc.MediaAddr = a
	}
	if *mediaBind != "" {
		a, err := netip.ParseAddr(*mediaBind)
		if err != nil {
			return fmt.Errorf("siprec: --media-bind: %w", err)
		}
		sc.MediaBind = a
	}
	var err error
	if sc.PortMin, sc.PortMax, err = parsePorts(*ports); err != nil {
		return err
	}
	sc.MediaBuffer = int64(*mediaBuffer) << 20
	if *digestUser != "" {
		pw := os.Getenv("VERBATIM_SIPREC_PASSWORD")
		if pw == "" {
			return errors.New("siprec: --digest-user needs the password in env VERBATIM_SIPREC_PASSWORD (never on the command line)")
		}
		sc.Digest = &ingest.DigestAuth{Realm: *digestRealm, User: *digestUser, Password: pw}
	}
	if slices.ContainsFunc(listen, func(l string) bool { return strings.HasPrefix(l, "tls:") }) {
		if *cert == "" || *key == "" {
			return errors.New("siprec: a tls: listener needs --tls-cert and --tls-key")
		}
		c, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return fmt.Errorf("siprec: %w", err)
		}
		sc.TLS = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
		if *clientCA != "" {
			pool, err := loadCAPool(*clientCA)
			if err != nil {
				return fmt.Errorf("siprec: --tls-client-ca: %w", err)
			}
			sc.TLS.ClientCAs, sc.TLS.ClientAuth = pool, tls.RequireAndVerifyClientCert
		} else if len(sc.AllowNames) > 0 {
			return errors.New("siprec: --allow-name needs mutual TLS (--tls-client-ca)")
		}
	}
	km, err := inf.keys.manager()
	if err != nil {
		return err
	}
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	opsSrv, _, err := of.start(octx, "siprec", inf.kafka, "verbatim-srs", stderr)
	if err != nil {
		return err
	}
	cl, err := inf.kafka.client("verbatim-srs", stderr, srsProducerOpts(sc.MediaBuffer)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	cfg := ingest.Config{Tenant: *inf.tenant, Keys: km, Producer: cl, Logger: warnLogger(stderr), PCI: *inf.pci, Source: "verbatim-srs"}
	sc.Ready = func(ls []string) {
		fmt.Fprintf(stderr, "SIPREC recording server listening on %s; RTP on %s ports %s; Ctrl-C to stop\n",
			strings.Join(ls, ", "), sc.MediaAddr, *ports)
	}
	var last atomic.Pointer[ingest.SRSStats]
	last.Store(&ingest.SRSStats{})
	if opsSrv != nil {
		siprecMetrics(opsSrv, &last)
		sc.ProgressEvery = time.Second
	}
	var printed time.Time
	sc.Progress = func(st ingest.SRSStats) {
		last.Store(&st)
		if time.Since(printed) < 10*time.Second { // the endpoint takes every report; the line, one in ten seconds
			return
		}
		printed = time.Now()
		var refused uint64
		for _, n := range st.Refused {
			refused += n
		}
		fmt.Fprintf(stderr, "siprec: %d sessions open, %d recorded, %d INVITEs refused, %d foreign RTP packets dropped\n",
			st.Active, st.Sessions, refused, st.ForeignPackets)
	}
	source := "siprec:" + strings.Join(listen, ",")
	if err := operatorAudit(ctx, cl, cfg.Tenant, "capture.started", "capture", source, "", nil); err != nil {
		return err
	}
	rep, st, err := ingest.SIPREC(ctx, cfg, sc)
	fmt.Fprintf(stdout, "siprec: %d sessions recorded (at most %d at once), %d RTP packets in %d batches\n", st.Sessions, st.Peak, rep.RTPPackets, rep.Batches)
	printSRSWarnings(stdout, st)
	printWarnings(stdout, rep)
	return errors.Join(err, operatorAudit(ctx, cl, cfg.Tenant, "capture.stopped", "capture", source,
		fmt.Sprintf("%d sessions recorded, %d RTP packets", st.Sessions, rep.RTPPackets), err))
}

// siprecMetrics exports a recording server's counts, as its last report
// (every second) left them.
func siprecMetrics(srv *ops.Server, last *atomic.Pointer[ingest.SRSStats]) {
	refused := func(s *ingest.SRSStats) uint64 {
		var n uint64
		for _, v := range s.Refused {
			n += v
		}
		return n
	}
	ops.Totals(srv, "siprec", last, []ops.Total[ingest.SRSStats]{
		{Name: "sessions_total", Help: "Recording sessions accepted.", Value: func(s *ingest.SRSStats) uint64 { return s.Sessions }},
		{Name: "invites_refused_total", Help: "INVITEs refused, for any reason (rate limited included).", Value: refused},
		{Name: "invites_rate_limited_total", Help: "INVITEs refused because one source sent them too fast.", Value: func(s *ingest.SRSStats) uint64 { return s.RateLimited }},
		{Name: "foreign_packets_total", Help: "RTP packets from an address other than the session's SRC (RTP Bleed), dropped.", Value: func(s *ingest.SRSStats) uint64 { return s.ForeignPackets }},
		{Name: "sessions_ended_by_recorder_total", Help: "Sessions the recorder ended itself (Kafka away past the media buffer, or the session timer).", Value: func(s *ingest.SRSStats) uint64 { return s.EndedByRecorder }},
	})
	srv.GaugeFunc("siprec", "sessions_open", "Recording sessions open now.", func() float64 { return float64(last.Load().Active) })
}

// printSRSWarnings says what the server refused and dropped, and why.
func printSRSWarnings(w io.Writer, st ingest.SRSStats) {
	codes := make([]int, 0, len(st.Refused))
	for c := range st.Refused {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "  refused: %d INVITEs answered %d\n", st.Refused[c], c)
	}
	if st.LastRefusal != "" {
		fmt.Fprintf(w, "  last refusal: %s\n", st.LastRefusal)
	}
	if st.RateLimited > 0 {
		fmt.Fprintf(w, "  warning: %d INVITEs over --invite-rate refused (503)\n", st.RateLimited)
	}
	if st.ForeignPackets > 0 {
		fmt.Fprintf(w, "  warning: %d RTP packets from addresses other than their SRC's dropped\n", st.ForeignPackets)
	}
	if st.EndedByRecorder > 0 {
		fmt.Fprintf(w, "  warning: %d sessions ended by the recorder (session timer expired, idle, or Kafka unavailable past the buffer): their recordings say why\n", st.EndedByRecorder)
	}
}

// devSIPREC is the siprec role of verbatim dev.
type devSIPREC struct{ listen, ports, tenant string }

// start binds the role's listeners and returns the func that serves until
// ctx ends.
func (d devSIPREC) start(ctx context.Context, s *devstack.Stack, stdout, stderr io.Writer) (func() error, error) {
	pmin, pmax, err := parsePorts(d.ports)
	if err != nil {
		return nil, err
	}
	sc := ingest.SRSConfig{Listen: strings.Split(d.listen, ","), PortMin: pmin, PortMax: pmax, MediaBuffer: 256 << 20}
	cl, err := kafkaclient.New(kafkaclient.Config{Brokers: s.Brokers, ClientID: "verbatim-srs", Logger: warnLogger(stderr)},
		srsProducerOpts(sc.MediaBuffer)...)
	if err != nil {
		return nil, err
	}
	ready := make(chan []string, 1)
	sc.Ready = func(ls []string) { ready <- ls }
	done := make(chan error, 1)
	go func() {
		defer cl.Close()
		_, _, err := ingest.SIPREC(ctx, ingest.Config{Tenant: d.tenant, Keys: s.Keys, Producer: cl, Logger: warnLogger(stderr), Source: "verbatim-srs"}, sc)
		done <- err
	}()
	select {
	case ls := <-ready:
		fmt.Fprintf(stdout, "  role      siprec: SIPREC recording server on %s, RTP ports %s\n", strings.Join(ls, ", "), d.ports)
	case err := <-done:
		return nil, fmt.Errorf("siprec: %w", err)
	}
	return func() error { return <-done }, nil
}

// srsProducerOpts are the SRS's producer settings: no delivery timeout
// (while Kafka is away records wait, up to the media buffer, and new
// sessions are refused), and room in the client for that buffer so that a
// produce never blocks the engine.
func srsProducerOpts(mediaBuffer int64) []kgo.Opt {
	return []kgo.Opt{kgo.RecordDeliveryTimeout(0), kgo.MaxBufferedBytes(int(mediaBuffer) * 2), kgo.MaxBufferedRecords(1 << 20)}
}

// parsePorts reads a port range MIN-MAX.
func parsePorts(v string) (uint16, uint16, error) {
	lo, hi, ok := strings.Cut(v, "-")
	pmin, err1 := strconv.ParseUint(lo, 10, 16)
	pmax, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || pmin > pmax {
		return 0, 0, fmt.Errorf("siprec: RTP port range %q: want MIN-MAX", v)
	}
	return uint16(pmin), uint16(pmax), nil
}
