package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"golang.org/x/time/rate"

	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/ingest/internal/siprec"
	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/ingest/internal/udprecv"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// SRSConfig configures the SIPREC Session Recording Server (RFC 7866).
type SRSConfig struct {
	// Listen are the SIP listeners, "udp:HOST:PORT", "tcp:HOST:PORT" or
	// "tls:HOST:PORT" (port 0: any free port). Required.
	Listen []string
	// TLS is the server configuration of tls: listeners (its certificate;
	// ClientAuth and ClientCAs for mutual TLS).
	TLS *tls.Config
	// AllowNames, if set, are the certificate names (DNS SANs, or the
	// common name) of the SRCs allowed over mutual TLS.
	AllowNames []string
	// AllowSources, if set, are the networks SRCs may connect from; an
	// INVITE from elsewhere is refused (403).
	AllowSources []netip.Prefix
	// MediaAddr is the address RTP is received on and announced in the
	// answers. Default: the first listener's address (which must then not
	// be a wildcard).
	MediaAddr netip.Addr
	// MediaBind is the address the media ports are bound to, when it is
	// not MediaAddr (behind NAT or in a container: bind 0.0.0.0, announce
	// the public address). Default MediaAddr.
	MediaBind netip.Addr
	// PortMin and PortMax bound the RTP ports (default 20000-29999).
	PortMin, PortMax uint16
	// PlainCalls records an INVITE that is not a SIPREC session (no
	// +sip.src, no siprec option tag, no recording metadata) as a plain
	// call of its From and To; by default it is refused (488).
	PlainCalls bool
	// MaxSessions bounds the sessions recorded at once (default 10,000);
	// more are refused with 503.
	MaxSessions int
	// InviteRate and InviteBurst bound the new sessions a second one
	// source address may start (default 50, burst 100); more are refused
	// with 503 and counted.
	InviteRate  float64
	InviteBurst int
	// AcceptTimeout bounds how long a new session waits for its data key
	// to be stored in Kafka before it is refused with 503 (default 3 s).
	AcceptTimeout time.Duration
	// MediaBuffer bounds the bytes of records waiting for Kafka's
	// acknowledgement (default 256 MiB): past it, every session is ended
	// with a recorded failure, rather than lose media silently.
	MediaBuffer int64
	// IdleTimeout ends a session with neither SIP nor RTP for this long
	// while none of its streams is paused (default 5 minutes).
	IdleTimeout time.Duration
	// Digest, if set, requires SIP digest authentication (RFC 8760 MD5 or
	// SHA-256) of every new session.
	Digest *DigestAuth
	// Linger is how long media may wait in the kernel's socket buffers
	// between reads (default udprecv.DefaultLinger, 20 ms): one read then
	// takes what each port gathered, instead of one wake per packet.
	Linger time.Duration
	// RetryAfter is the Retry-After of a 503, in seconds (default 5).
	RetryAfter int
	// Progress, if set, is called every ProgressEvery (default 10 s) with
	// what the server has accepted and refused so far.
	Progress      func(SRSStats)
	ProgressEvery time.Duration
	// Ready, if set, is called with the bound listeners ("udp:127.0.0.1:5060").
	Ready func(listeners []string)
}

// DigestAuth is one SRC account; Password is never logged.
type DigestAuth struct {
	Realm, User, Password string
}

// String never shows the password.
func (d DigestAuth) String() string { return fmt.Sprintf("DigestAuth{%s@%s}", d.User, d.Realm) }

func (sc *SRSConfig) setDefaults() {
	if sc.PortMin == 0 && sc.PortMax == 0 {
		sc.PortMin, sc.PortMax = 20000, 29999
	}
	if sc.MaxSessions <= 0 {
		sc.MaxSessions = 10_000
	}
	if sc.InviteRate <= 0 {
		sc.InviteRate = 50
	}
	if sc.InviteBurst <= 0 {
		sc.InviteBurst = 100
	}
	if sc.AcceptTimeout <= 0 {
		sc.AcceptTimeout = 3 * time.Second
	}
	if sc.MediaBuffer <= 0 {
		sc.MediaBuffer = 256 << 20
	}
	if sc.IdleTimeout <= 0 {
		sc.IdleTimeout = 5 * time.Minute
	}
	if sc.RetryAfter <= 0 {
		sc.RetryAfter = 5
	}
}

// SRSStats says what the SIPREC server accepted and refused, and why.
type SRSStats struct {
	Sessions uint64 // accepted
	Active   int
	Peak     int // the most sessions recorded at once
	// Refused counts refused INVITEs by SIP status (400, 403, 415, 488,
	// 503...); LastRefusal says the last reason.
	Refused     map[int]uint64
	LastRefusal string
	// RateLimited INVITEs (of Refused[503]) came faster than InviteRate
	// from one source.
	RateLimited uint64
	// ForeignPackets arrived on a session's media port from an address
	// other than the one its SRC negotiated (RTP Bleed): dropped.
	ForeignPackets uint64
	// EndedByRecorder are sessions the SRS ended itself: Kafka was
	// unavailable past the media buffer, or the session timer expired.
	EndedByRecorder uint64
}

// SIPREC runs a SIPREC recording server until ctx ends: SRCs (SBCs, PBXs)
// fork calls to it, and each recording session becomes a call recorded
// like a captured one (capture source SIPREC), with the metadata's
// participants as its parties. When ctx ends, the sessions still open are
// ended (BYE) and everything received is produced before it returns.
func SIPREC(ctx context.Context, cfg Config, sc SRSConfig) (Report, SRSStats, error) {
	cfg.setDefaults()
	sc.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, SRSStats{}, err
	}
	if len(sc.Listen) == 0 {
		return Report{}, SRSStats{}, errors.New("srs: no listener (--listen udp:HOST:PORT)")
	}
	if sc.PortMin > sc.PortMax || sc.PortMin < 1024 {
		return Report{}, SRSStats{}, fmt.Errorf("srs: bad RTP port range %d-%d", sc.PortMin, sc.PortMax)
	}
	if cfg.Source == "verbatim-ingest" {
		cfg.Source = "verbatim-srs"
	}
	start := time.Now()
	in := &pcapIngest{cfg: cfg, ctx: context.WithoutCancel(ctx), calls: map[string]*call{}, byFlow: map[flowKey]*stream{},
		byAddr: map[netip.AddrPort]*stream{}, server: true, source: verbatimv1.CaptureSource_CAPTURE_SOURCE_SIPREC}
	eng := &srsEngine{in: in, msgs: make(chan *srsMsg, 4096), kick: make(chan struct{}, 1), bound: sc.MediaBuffer, since: time.Now()}
	in.srs = eng
	srv := &srsServer{cfg: cfg, sc: sc, eng: eng, sessions: map[string]*srsSession{}, byCallID: map[string]*srsSession{},
		limiters: map[netip.Addr]*srsLimiter{}, ports: map[uint16]bool{}, stopped: make(chan struct{}),
		stats: SRSStats{Refused: map[int]uint64{}}, log: cfg.Logger}
	eng.overflow = srv.overflowed
	if _, err := rand.Read(srv.secret[:]); err != nil {
		return Report{}, SRSStats{}, err
	}
	for range min(max(runtime.GOMAXPROCS(0), 1), 4) {
		pl, err := udprecv.NewPoller(srv.received, sc.Linger)
		if err != nil {
			srv.closePollers()
			return Report{}, SRSStats{}, err
		}
		srv.pollers = append(srv.pollers, pl)
	}
	if err := srv.listen(ctx); err != nil {
		srv.closeListeners()
		srv.closePollers()
		return Report{}, SRSStats{}, err
	}
	engCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	engDone := make(chan struct{})
	go func() { defer close(engDone); eng.loop(engCtx) }()
	janitorDone := make(chan struct{})
	go func() { defer close(janitorDone); srv.janitor(ctx) }()
	if sc.Ready != nil {
		sc.Ready(srv.bound)
	}

	<-ctx.Done()
	// Stop taking sessions, end the open ones (BYE to their SRCs), and
	// produce everything they sent.
	srv.closeListeners()
	<-janitorDone
	srv.endAll(verbatimv1.EndReason_END_REASON_CAPTURE_ENDED, "")
	srv.closePollers() // every port is closed, drained
	synced := make(chan bool, 1)
	eng.msgs <- &srsMsg{kind: srsSync, reply: synced} // after every end above
	<-synced
	stopEngine()
	<-engDone
	close(srv.stopped)
	srv.ua.Close()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	in.settleKeys(fctx)
	if err := cfg.Producer.Flush(fctx); err != nil && in.err == nil {
		in.err = fmt.Errorf("srs: flush: %w", err)
	}
	in.produceMu.Lock()
	if in.err == nil {
		in.err = in.produceErr
	}
	in.produceMu.Unlock()
	in.report.Elapsed = time.Since(start)
	return in.report, srv.snapshot(), in.err
}

type srsServer struct {
	cfg Config
	sc  SRSConfig
	eng *srsEngine
	log *slog.Logger
	ua  *sipgo.UserAgent
	cl  *sipgo.Client
	srv *sipgo.Server

	listeners []interface{ Close() error }
	bound     []string
	contacts  map[string]sip.ContactHeader // by transport

	mu       sync.Mutex
	sessions map[string]*srsSession // by dialog id
	byCallID map[string]*srsSession // by SIP Call-ID: CANCEL, and a retransmitted INVITE
	limiters map[netip.Addr]*srsLimiter
	ports    map[uint16]bool
	nextPort uint16
	stats    SRSStats
	// down says since when new sessions are refused: Kafka did not store
	// a session's key in time. Cleared by the next acknowledgement.
	down    time.Time
	probe   time.Time // when a session last was tried while down
	stopped chan struct{}
	// pollers read the media ports, a few sockets each.
	pollers    []*udprecv.Poller
	nextPoller int
	secret     [32]byte // signs digest nonces
}

type srsLimiter struct {
	lim  *rate.Limiter
	seen time.Time
}

// srsSession is one recording session (one SIP dialog). mu serialises
// what changes it (an in-dialog offer, its end) and guards its ports,
// offer, metadata and timer; lock it before srsServer.mu, never after.
type srsSession struct {
	mu                     sync.Mutex
	key, sipCallID, callID string
	dialog                 *sipgo.DialogServerSession
	transport              string
	started                time.Time
	version                uint64
	offer                  []sipdialog.Media
	meta                   *siprec.Metadata
	ports                  []*srsPort // per offered m-line; nil: refused (port 0)
	answer                 []byte
	// expires is the session interval (RFC 4028) the SRC refreshes within;
	// zero: no session timer.
	expires time.Duration
	lastSIP atomic.Int64 // unix nanos
	ended   bool
	fromTag string
	// plain: not a SIPREC session (PlainCalls): recorded as a call of
	// its From (caller, who sends the media) and To.
	plain           bool
	fromURI, fromDN string
	// oversize and kernelDrops sum, as its ports close, the datagrams too
	// long to keep and those the kernel dropped (a full socket buffer).
	oversize, kernelDrops uint64
	toURI, toDN           string
}

// srsPort is one SRS media port: where one stream's RTP arrives.
type srsPort struct {
	sock    *udprecv.Socket
	local   netip.AddrPort
	latch   atomic.Pointer[siprec.Latch]
	want    netip.AddrPort // the SRC's SDP address of the stream
	last    atomic.Int64   // unix nanos of its last packet
	foreign atomic.Uint64
	// oversize are datagrams from the SRC longer than udprecv.MaxDatagram:
	// cut, so dropped, and the recording says so.
	oversize atomic.Uint64
	crypto   []sipdialog.Crypto // the SRS's answer's key (SRTP)
	poller   *udprecv.Poller
}

func (s *srsServer) listen(ctx context.Context) error {
	var err error
	// A message may be as large as the body bound and its headers: larger
	// ones are still refused with a reason (413), not by dropping the
	// connection; past this the connection is dropped (bounded cost).
	parser := sip.NewParser()
	parser.MaxMessageLength = maxBody + 32<<10
	s.ua, err = sipgo.NewUA(sipgo.WithUserAgent("Verbatim SRS"), sipgo.WithUserAgentParser(parser),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(s.log)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(s.log)))
	if err != nil {
		return fmt.Errorf("srs: %w", err)
	}
	if s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(s.log)); err != nil {
		return fmt.Errorf("srs: %w", err)
	}
	if s.cl, err = sipgo.NewClient(s.ua, sipgo.WithClientLogger(s.log)); err != nil {
		return fmt.Errorf("srs: %w", err)
	}
	s.contacts = map[string]sip.ContactHeader{}
	// The listeners serve once handlers, contacts and ports are set.
	var serve []func()
	s.srv.OnInvite(s.onInvite)
	s.srv.OnAck(s.onAck)
	s.srv.OnBye(s.onBye)
	s.srv.OnCancel(func(*sip.Request, sip.ServerTransaction) {}) // the transaction layer answers it
	s.srv.OnOptions(s.onOptions)
	s.srv.OnUpdate(s.inDialog)
	s.srv.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	for _, l := range s.sc.Listen {
		network, addr, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("srs: listener %q: want udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT", l)
		}
		var local net.Addr
		switch network {
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("srs: %w", err)
			}
			s.listeners = append(s.listeners, pc)
			local = pc.LocalAddr()
			serve = append(serve, func() { _ = s.srv.ServeUDP(pc) })
		case "tcp", "tls":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("srs: %w", err)
			}
			local = ln.Addr()
			if network == "tls" {
				if s.sc.TLS == nil || (len(s.sc.TLS.Certificates) == 0 && s.sc.TLS.GetCertificate == nil) {
					ln.Close()
					return fmt.Errorf("srs: listener %q needs a certificate (--tls-cert, --tls-key)", l)
				}
				conf := s.sc.TLS.Clone()
				if len(s.sc.AllowNames) > 0 {
					conf.VerifyConnection = s.verifyName
				}
				ln = tls.NewListener(ln, conf)
				s.listeners = append(s.listeners, ln)
				serve = append(serve, func() { _ = s.srv.ServeTLS(ln) })
			} else {
				s.listeners = append(s.listeners, ln)
				serve = append(serve, func() { _ = s.srv.ServeTCP(ln) })
			}
		default:
			return fmt.Errorf("srs: listener %q: unknown transport %q", l, network)
		}
		ap, err := netip.ParseAddrPort(local.String())
		if err != nil {
			return fmt.Errorf("srs: %w", err)
		}
		s.bound = append(s.bound, network+":"+ap.String())
		if !s.sc.MediaAddr.IsValid() {
			if ap.Addr().IsUnspecified() {
				return fmt.Errorf("srs: listener %q is on every address: say which to receive media on (--media-addr)", l)
			}
			s.sc.MediaAddr = ap.Addr().Unmap()
		}
		tp := strings.ToUpper(network)
		if _, ok := s.contacts[tp]; !ok {
			host := s.sc.MediaAddr.String()
			if !ap.Addr().IsUnspecified() {
				host = ap.Addr().Unmap().String()
			}
			u := sip.Uri{Scheme: "sip", Host: host, Port: int(ap.Port()), UriParams: sip.NewParams()}
			if network != "udp" {
				u.UriParams.Add("transport", network)
			}
			if network == "tls" {
				u.Scheme = "sips"
			}
			s.contacts[tp] = sip.ContactHeader{Address: u}
		}
	}
	s.nextPort = s.sc.PortMin &^ 1
	for _, f := range serve { // everything requests read is set
		go f()
	}
	_ = ctx
	return nil
}

func (s *srsServer) closePollers() {
	for _, pl := range s.pollers {
		pl.Close()
	}
	s.pollers = nil
}

func (s *srsServer) closeListeners() {
	for _, l := range s.listeners {
		_ = l.Close()
	}
	s.listeners = nil
}

// verifyName admits an SRC's client certificate only if it names one of
// AllowNames (mutual TLS; the chain was verified by crypto/tls).
func (s *srsServer) verifyName(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("srs: the SRC presented no certificate")
	}
	c := cs.PeerCertificates[0]
	for _, n := range append(slices.Clone(c.DNSNames), c.Subject.CommonName) {
		if slices.Contains(s.sc.AllowNames, n) {
			return nil
		}
	}
	return fmt.Errorf("srs: SRC certificate %q is not one of the allowed names", c.Subject.CommonName)
}

func (s *srsServer) snapshot() SRSStats {
	s.mu.Lock()
	st := s.stats
	st.Refused = maps.Clone(s.stats.Refused)
	s.mu.Unlock()
	open := s.openSessions()
	st.Active = len(open)
	for _, ss := range open {
		ss.mu.Lock()
		for _, p := range ss.ports {
			if p != nil {
				st.ForeignPackets += p.foreign.Load()
			}
		}
		ss.mu.Unlock()
	}
	return st
}

// openSessions are the sessions open now.
func (s *srsServer) openSessions() []*srsSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Values(s.sessions))
}

// refuse answers an INVITE with a final error, counted with its reason.
func (s *srsServer) refuse(req *sip.Request, tx sip.ServerTransaction, code int, reason, why string, hdrs ...sip.Header) {
	s.mu.Lock()
	s.stats.Refused[code]++
	s.stats.LastRefusal = fmt.Sprintf("%d %s: %s", code, reason, why)
	s.mu.Unlock()
	s.log.Info("SIPREC INVITE refused", "status", code, "reason", why, "source", req.Source(), "call-id", callIDOf(req))
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if why != "" {
		// RFC 3261 20.43: 399 is a miscellaneous warning, with text.
		res.AppendHeader(sip.NewHeader("Warning", `399 verbatim "`+strings.ReplaceAll(why, `"`, `'`)+`"`))
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

func (s *srsServer) retryAfter() sip.Header {
	return sip.NewHeader("Retry-After", strconv.Itoa(s.sc.RetryAfter))
}

func callIDOf(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// maxBody bounds an INVITE's body: SDP and metadata of a few streams are a
// few KB; the metadata alone is bounded by siprec.MaxMetadataBytes.
const maxBody = 256 << 10

// supportedOptions are the option tags a Require may name.
var supportedOptions = []string{"siprec", "timer", "replaces", "100rel"} //nolint:gochecknoglobals // a constant list

func (s *srsServer) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil {
		if tag, _ := to.Params.Get("tag"); tag != "" {
			s.inDialog(req, tx)
			return
		}
	}
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		s.refuse(req, tx, 400, "Bad Request", "unreadable source address")
		return
	}
	if len(s.sc.AllowSources) > 0 && !slices.ContainsFunc(s.sc.AllowSources, func(p netip.Prefix) bool { return p.Contains(src.Addr().Unmap()) }) {
		s.refuse(req, tx, 403, "Forbidden", "source "+src.Addr().String()+" is not an allowed SRC")
		return
	}
	if !s.allow(src.Addr().Unmap()) {
		s.mu.Lock()
		s.stats.RateLimited++
		s.mu.Unlock()
		s.refuse(req, tx, 503, "Service Unavailable", "too many new sessions from "+src.Addr().String(), s.retryAfter())
		return
	}
	if s.sc.Digest != nil && !s.authorized(req, tx) {
		return
	}
	for _, h := range req.GetHeaders("Require") {
		for _, opt := range strings.Split(h.Value(), ",") {
			if opt = strings.TrimSpace(opt); opt != "" && !slices.Contains(supportedOptions, strings.ToLower(opt)) {
				s.refuse(req, tx, 420, "Bad Extension", "option "+opt+" is not supported", sip.NewHeader("Unsupported", opt))
				return
			}
		}
	}
	if len(req.Body()) > maxBody {
		s.refuse(req, tx, 413, "Request Entity Too Large", fmt.Sprintf("body of %d bytes, more than %d", len(req.Body()), maxBody))
		return
	}
	body, ok := s.readBody(req, tx)
	if !ok {
		return
	}
	isSIPREC := body.Metadata != nil || isSRC(req)
	if !isSIPREC && !s.sc.PlainCalls {
		s.refuse(req, tx, 488, "Not Acceptable Here", "not a SIPREC recording session (no +sip.src, no siprec option tag, no recording metadata); this SRS records SIPREC only")
		return
	}
	var meta *siprec.Metadata
	if body.Metadata != nil {
		if meta, err = siprec.ParseMetadata(body.Metadata); err != nil {
			s.refuse(req, tx, 400, "Bad Request", err.Error())
			return
		}
	}
	if body.SDP == nil {
		s.refuse(req, tx, 488, "Not Acceptable Here", "no SDP offer (an offer in the ACK is not supported)")
		return
	}
	offer, err := sipdialog.ParseSDP(body.SDP)
	if err != nil {
		s.refuse(req, tx, 400, "Bad Request", "SDP: "+err.Error())
		return
	}
	// A metadata stream whose label no m-line has is not recorded (there
	// is no media for it) and does not refuse the session: the call is
	// still recorded. Streams an association names that the document
	// does not define were refused by ParseMetadata.
	if !slices.ContainsFunc(offer, recordable) {
		// Before any data key or port is spent on it.
		s.refuse(req, tx, 488, "Not Acceptable Here", "no audio stream with a codec Verbatim records")
		return
	}
	expires, err := sessionExpires(req)
	if err != nil {
		s.refuse(req, tx, 422, "Session Interval Too Small", err.Error(), sip.NewHeader("Min-SE", "90"))
		return
	}
	s.mu.Lock()
	full := len(s.sessions) >= s.sc.MaxSessions
	// While Kafka is down, sessions are refused at once, but one every
	// Retry-After is tried, to see whether it is back.
	down := !s.down.IsZero() && time.Since(s.probe) < time.Duration(s.sc.RetryAfter)*time.Second
	if !s.down.IsZero() && !down {
		s.probe = time.Now()
	}
	s.mu.Unlock()
	switch {
	case full:
		s.refuse(req, tx, 503, "Service Unavailable", fmt.Sprintf("%d sessions already recorded (--max-sessions)", s.sc.MaxSessions), s.retryAfter())
		return
	case down:
		s.refuse(req, tx, 503, "Service Unavailable", "Kafka is not storing records: new sessions are refused until it does", s.retryAfter())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.sc.AcceptTimeout)
	defer cancel()
	dk, err := s.cfg.Keys.GenerateDataKey(ctx, s.cfg.Tenant)
	if err != nil {
		s.refuse(req, tx, 503, "Service Unavailable", "key manager unavailable: "+err.Error(), s.retryAfter())
		return
	}
	dua := sipgo.DialogUA{Client: s.cl, ContactHDR: s.contacts[strings.ToUpper(req.Transport())]}
	dlg, err := dua.ReadInvite(req, tx)
	if err != nil {
		s.refuse(req, tx, 400, "Bad Request", err.Error())
		return
	}
	now := time.Now()
	sess := &srsSession{key: dlg.ID, sipCallID: callIDOf(req), dialog: dlg, transport: req.Transport(), started: now,
		meta: meta, expires: expires, version: uint64(now.Unix())}
	if f := req.From(); f != nil {
		sess.fromTag, _ = f.Params.Get("tag")
		sess.fromURI, sess.fromDN = f.Address.String(), f.DisplayName
	}
	if to := req.To(); to != nil {
		sess.toURI, sess.toDN = to.Address.String(), to.DisplayName
	}
	sess.plain = !isSIPREC
	sess.callID = schemas.DerivedID(s.cfg.Tenant, "siprec", sess.sipCallID, now.UTC().Format(time.RFC3339Nano))
	sess.lastSIP.Store(now.UnixNano())
	if err := s.negotiate(sess, offer); err != nil {
		s.closePorts(sess)
		s.refuse(req, tx, 503, "Service Unavailable", err.Error(), s.retryAfter())
		return
	}
	ready := make(chan error, 1)
	s.eng.msgs <- &srsMsg{kind: srsStart, key: sess.key, callID: sess.callID, at: now, desc: s.describe(sess), dk: dk,
		ready: func(err error) { ready <- err }}
	var rerr error
	select {
	case rerr = <-ready:
	case <-ctx.Done():
		reply := make(chan bool, 1)
		s.eng.msgs <- &srsMsg{kind: srsAbandon, key: sess.key, reply: reply}
		if <-reply {
			rerr = errors.New("Kafka did not store the session's data key within " + s.sc.AcceptTimeout.String())
			s.mu.Lock()
			if s.down.IsZero() {
				s.down = time.Now()
			}
			s.mu.Unlock()
		} else {
			rerr = <-ready
		}
	}
	if rerr != nil {
		s.closePorts(sess)
		s.refuse(req, tx, 503, "Service Unavailable", rerr.Error(), s.retryAfter())
		return
	}
	sess.mu.Lock() // visible to the other handlers from here
	s.mu.Lock()
	s.sessions[sess.key] = sess
	s.byCallID[sess.sipCallID] = sess
	s.stats.Sessions++
	s.stats.Peak = max(s.stats.Peak, len(s.sessions))
	s.down = time.Time{}
	s.mu.Unlock()
	for _, p := range sess.ports {
		if p != nil {
			s.startReader(p)
		}
	}
	res := sip.NewSDPResponseFromRequest(dlg.InviteRequest, sess.answer)
	if sess.expires > 0 {
		res.AppendHeader(sip.NewHeader("Session-Expires", fmt.Sprintf("%d;refresher=uac", int(sess.expires.Seconds()))))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"))
	res.AppendHeader(sip.NewHeader("Supported", "timer"))
	sess.mu.Unlock()
	if err := dlg.WriteResponse(res); err != nil {
		if errors.Is(err, sip.ErrTransactionCanceled) {
			// CANCEL came before the 200 went out (the transaction layer
			// answered it, and the INVITE with 487).
			s.finish(sess, verbatimv1.EndReason_END_REASON_CANCEL, "", false)
			return
		}
		// No ACK: RFC 3261 13.3.1.4 says end the session.
		s.log.Warn("SIPREC session not confirmed", "call-id", sess.sipCallID, "err", err)
		s.finish(sess, verbatimv1.EndReason_END_REASON_TIMEOUT, "", true)
	}
}

// readBody splits a request's body (splitOffer), or refuses the request
// with the reason.
func (s *srsServer) readBody(req *sip.Request, tx sip.ServerTransaction) (siprec.Body, bool) {
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	body, code, err := splitOffer(ct, req.Body())
	if err != nil {
		reason := "Bad Request"
		if code == 415 {
			reason = "Unsupported Media Type"
		}
		s.refuse(req, tx, code, reason, err.Error(), sip.NewHeader("Accept", "application/sdp, multipart/mixed, application/rs-metadata+xml"))
		return siprec.Body{}, false
	}
	return body, true
}

// splitOffer reads an INVITE's or UPDATE's body: SDP alone, or SDP and
// metadata in multipart/mixed (RFC 7866 9). The status says how to refuse
// it: 415 for a body of another type, 400 for a malformed one.
func splitOffer(contentType string, body []byte) (siprec.Body, int, error) {
	if len(body) == 0 {
		return siprec.Body{}, 0, nil
	}
	mt := ""
	if contentType != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(contentType); err != nil {
			return siprec.Body{}, 400, fmt.Errorf("Content-Type %q: %w", contentType, err)
		}
	}
	switch mt {
	case "application/sdp":
		return siprec.Body{SDP: body}, 0, nil
	case "application/rs-metadata+xml", "application/rs-metadata":
		// A metadata update alone (RFC 7866 7.3), in an UPDATE or a
		// re-INVITE.
		return siprec.Body{Metadata: body}, 0, nil
	case "multipart/mixed", "":
	default:
		return siprec.Body{}, 415, fmt.Errorf("a body of type %s; an SRS takes application/sdp, multipart/mixed or application/rs-metadata+xml", mt)
	}
	b, err := siprec.SplitBody(contentType, body)
	if errors.Is(err, siprec.ErrNotSIPREC) && b.SDP != nil {
		return b, 0, nil // SDP without metadata: the metadata may come later
	}
	if err != nil && b.SDP == nil && b.Metadata != nil {
		return siprec.Body{Metadata: b.Metadata}, 0, nil // metadata alone: an update
	}
	if err != nil {
		return siprec.Body{}, 400, err
	}
	return b, 0, nil
}

// isSRC says the INVITE comes from a Session Recording Client: its Contact
// has the +sip.src feature tag (RFC 7866 6.1.1) or it requires or
// supports the siprec option tag.
func isSRC(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Contact") {
		if v := strings.ToLower(h.Value()); strings.Contains(v, "+sip.src") || strings.HasSuffix(v, ";src") || strings.Contains(v, ";src;") {
			return true
		}
	}
	for _, name := range []string{"Require", "Supported"} {
		for _, h := range req.GetHeaders(name) {
			if slices.ContainsFunc(strings.Split(h.Value(), ","), func(o string) bool { return strings.EqualFold(strings.TrimSpace(o), "siprec") }) {
				return true
			}
		}
	}
	return false
}

// sessionExpires reads RFC 4028's Session-Expires; under 90 s is refused.
func sessionExpires(req *sip.Request) (time.Duration, error) {
	h := req.GetHeader("Session-Expires")
	if h == nil {
		if h = req.GetHeader("x"); h == nil { // compact form
			return 0, nil
		}
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, nil // unreadable: no timer
	}
	if n < 90 {
		return 0, fmt.Errorf("session interval %d s is under 90 s", n)
	}
	return time.Duration(n) * time.Second, nil
}

// negotiate allocates a port for every recordable audio line of the offer
// (keeping the ports of lines already negotiated, matched by label or
// position) and makes the answer.
func (s *srsServer) negotiate(sess *srsSession, offer []sipdialog.Media) error {
	old := sess.ports
	oldOffer := sess.offer
	ports := make([]*srsPort, len(offer))
	var nums []uint16
	var crypto [][]sipdialog.Crypto
	for i, m := range offer {
		if !recordable(m) {
			continue
		}
		var p *srsPort
		for j, o := range old {
			if o != nil && j < len(oldOffer) && (m.Label != "" && oldOffer[j].Label == m.Label || m.Label == "" && j == i) {
				p, old[j] = o, nil
				break
			}
		}
		if p == nil {
			var err error
			if p, err = s.openPort(); err != nil {
				return err
			}
		}
		if p.want != m.Addr {
			// A signalled address: the latch learns the SRC's source anew
			// from it, never from the packets alone.
			p.want = m.Addr
			p.latch.Store(siprec.NewLatch(m.Addr))
		}
		if strings.Contains(m.Transport, "SAVP") {
			c, err := answerCrypto(m.Crypto)
			if err != nil {
				return err
			}
			p.crypto = c
		}
		ports[i] = p
		nums = append(nums, p.local.Port())
		crypto = append(crypto, p.crypto)
	}
	for _, o := range old { // streams the offer no longer has
		if o != nil {
			s.closePort(sess, o)
		}
	}
	ans, err := siprec.Answer(offer, s.sc.MediaAddr, nums, sess.version, crypto...)
	if err != nil {
		return err
	}
	sess.offer, sess.ports, sess.answer = offer, ports, ans
	sess.version++
	return nil
}

// recordable says the SRS records a line of an offer: audio with a port
// and a codec Verbatim records.
func recordable(m sipdialog.Media) bool { return m.Addr.Port() != 0 && siprec.Recordable(m) }

// answerCrypto is the SRS's answer to an SRC's SDES offer (RFC 4568): the
// first offered suite it can decrypt, under the offer's tag, with a key of
// its own (it sends nothing with it, but the answer must carry one).
func answerCrypto(offered []sipdialog.Crypto) ([]sipdialog.Crypto, error) {
	for _, c := range offered {
		if !srtpdec.Supported(c.Suite) || c.MKILen != 0 {
			continue
		}
		k := make([]byte, len(c.Key))
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		return []sipdialog.Crypto{{Tag: c.Tag, Suite: c.Suite, Key: k}}, nil
	}
	return nil, nil
}

// openPort binds the next free even port of the range.
func (s *srsServer) openPort() (*srsPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	span := int(s.sc.PortMax-s.sc.PortMin)/2 + 1
	for range span {
		n := s.nextPort
		s.nextPort += 2
		if s.nextPort > s.sc.PortMax || s.nextPort < s.sc.PortMin {
			s.nextPort = s.sc.PortMin &^ 1
		}
		if n < s.sc.PortMin || s.ports[n] {
			continue
		}
		bind := s.sc.MediaBind
		if !bind.IsValid() {
			bind = s.sc.MediaAddr
		}
		sock, err := udprecv.Listen(netip.AddrPortFrom(bind, n), 256<<10)
		if err != nil {
			continue // taken by another program
		}
		s.ports[n] = true
		return &srsPort{sock: sock, local: netip.AddrPortFrom(s.sc.MediaAddr, n)}, nil
	}
	return nil, fmt.Errorf("no free RTP port in %d-%d", s.sc.PortMin, s.sc.PortMax)
}

// closePort stops a port: what the kernel holds of it is read and handed
// to the engine first (an SRC's last packets come just before its BYE),
// then the socket is closed.
func (s *srsServer) closePort(sess *srsSession, p *srsPort) {
	if p.poller != nil {
		p.poller.Remove(p.sock)
	}
	if n, err := p.sock.Drops(); err == nil {
		sess.kernelDrops += uint64(n)
	}
	_ = p.sock.Close()
	sess.oversize += p.oversize.Load()
	s.mu.Lock()
	delete(s.ports, p.local.Port())
	s.stats.ForeignPackets += p.foreign.Load()
	p.foreign.Store(0)
	s.mu.Unlock()
}

func (s *srsServer) closePorts(sess *srsSession) {
	for i, p := range sess.ports {
		if p != nil {
			s.closePort(sess, p)
			sess.ports[i] = nil
		}
	}
}

// srsBufs hold the packets of one poller round, until the engine has
// batched them.
var srsBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64*udprecv.MaxDatagram); return &b }} //nolint:gochecknoglobals // a pool

// startReader has a poller read a media port until it is closed.
func (s *srsServer) startReader(p *srsPort) {
	s.mu.Lock()
	pl := s.pollers[s.nextPoller%len(s.pollers)]
	s.nextPoller++
	s.mu.Unlock()
	if err := pl.Add(p.sock, p); err != nil {
		s.log.Warn("media port unreadable", "port", p.local, "err", err)
		return
	}
	p.poller = pl
}

// received takes a poller round's datagrams: those from the address each
// port's SRC negotiated go to the engine, others are dropped and counted
// (RTP Bleed).
func (s *srsServer) received(ds []udprecv.Datagram) {
	now := time.Now()
	var m *srsMsg
	send := func() {
		if m == nil {
			return
		}
		if len(m.pkts) == 0 {
			*m.buf = (*m.buf)[:0]
			srsBufs.Put(m.buf)
		} else {
			select {
			case s.eng.msgs <- m:
			case <-s.stopped:
			}
		}
		m = nil
	}
	for _, d := range ds {
		p := d.Socket.(*srsPort)
		latch := p.latch.Load()
		if latch == nil || !latch.Accept(d.From) {
			p.foreign.Add(1)
			continue
		}
		if d.Truncated {
			p.oversize.Add(1) // the SRC's, but not whole
			continue
		}
		if m != nil && cap(*m.buf)-len(*m.buf) < len(d.Payload) {
			send()
		}
		if m == nil {
			buf := srsBufs.Get().(*[]byte)
			m = &srsMsg{kind: srsMedia, buf: buf, at: now}
		}
		off := len(*m.buf)
		*m.buf = append(*m.buf, d.Payload...)
		m.pkts = append(m.pkts, srsPacket{dst: p.local, from: d.From, data: (*m.buf)[off:len(*m.buf):len(*m.buf)]})
		p.last.Store(now.UnixNano())
	}
	send()
}

// describe snapshots a session for the engine: the metadata's
// participants, and each stream with its sender.
func (s *srsServer) describe(sess *srsSession) *srsDesc {
	d := &srsDesc{sipCallID: sess.sipCallID, fromTag: sess.fromTag}
	var parties []siprec.Party
	if sess.meta != nil {
		parties, _, _ = sess.meta.Parties(sess.offer)
		if len(sess.meta.Extensions) > 0 {
			d.vars = make(map[string]string, len(sess.meta.Extensions))
			for k, v := range sess.meta.Extensions {
				d.vars[k] = v
			}
		}
		for _, cs := range sess.meta.Sessions {
			d.csSessionIDs = append(d.csSessionIDs, cs.SIPSessionIDs...)
		}
		if len(sess.meta.Sessions) > 0 && len(sess.meta.Sessions[0].SIPSessionIDs) > 0 {
			if d.vars == nil {
				d.vars = map[string]string{}
			}
			d.vars["siprec.sipSessionID"] = sess.meta.Sessions[0].SIPSessionIDs[0]
		}
	}
	if sess.plain {
		// A plain call to the recorder: the caller sends, the callee is
		// who it called.
		d.parties = []srsParty{{id: "caller", role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER, uri: sess.fromURI, name: sess.fromDN},
			{id: "callee", role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLEE, uri: sess.toURI, name: sess.toDN}}
		for i, m := range sess.offer {
			if p := sess.ports[i]; p != nil {
				d.streams = append(d.streams, srsStream{id: fmt.Sprintf("caller-audio-%d", i+1), participant: "caller", label: m.Label,
					local: p.local, offer: m, answer: p.crypto, direction: m.Direction})
			}
		}
		return d
	}
	sender := map[string]string{}
	for i, p := range parties {
		role := verbatimv1.ParticipantRole_PARTICIPANT_ROLE_OTHER
		switch i {
		case 0:
			role = verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER
		case 1:
			role = verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLEE
		}
		d.parties = append(d.parties, srsParty{id: p.ParticipantID, role: role, uri: p.AoR, name: p.Name})
		for _, l := range p.Sends {
			sender[l] = p.ParticipantID
		}
	}
	for i, m := range sess.offer {
		p := sess.ports[i]
		if p == nil {
			continue
		}
		id := "siprec-" + m.Label
		if m.Label == "" {
			id = fmt.Sprintf("siprec-m%d", i+1)
		}
		who, ok := sender[m.Label]
		if !ok || m.Label == "" {
			// Nobody the metadata names sends it (no metadata yet): a
			// participant of its own, so that it still has a channel.
			who = "unknown-" + strings.TrimPrefix(id, "siprec-")
			if !slices.ContainsFunc(d.parties, func(p srsParty) bool { return p.id == who }) {
				d.parties = append(d.parties, srsParty{id: who, role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_OTHER})
			}
		}
		d.streams = append(d.streams, srsStream{id: id, participant: who, label: m.Label, local: p.local, offer: m,
			answer: p.crypto, direction: m.Direction})
	}
	return d
}

func (s *srsServer) session(req *sip.Request) *srsSession {
	id, err := sip.DialogIDFromRequestUAS(req)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

func (s *srsServer) onAck(req *sip.Request, tx sip.ServerTransaction) {

	if sess := s.session(req); sess != nil {
		sess.lastSIP.Store(time.Now().UnixNano())
		if req.CSeq() != nil && sess.dialog.InviteRequest.CSeq() != nil && req.CSeq().SeqNo == sess.dialog.InviteRequest.CSeq().SeqNo {
			_ = sess.dialog.ReadAck(req, tx)
		}
	}
}

func (s *srsServer) onBye(req *sip.Request, tx sip.ServerTransaction) {
	sess := s.session(req)
	if sess == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	// Ended first (a BYE handled before the ACK of the 200, which runs
	// concurrently, must not let the INVITE's handler end it as
	// unconfirmed), then answered: the dialog's 200 retransmissions stop.
	s.finish(sess, verbatimv1.EndReason_END_REASON_BYE, "", false)
	if err := sess.dialog.ReadBye(req, tx); err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
}

func (s *srsServer) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp, multipart/mixed, application/rs-metadata+xml"))
	res.AppendHeader(sip.NewHeader("Supported", "timer"))
	_ = tx.Respond(res)
}

// inDialog handles a re-INVITE or an UPDATE (RFC 3311): new or removed
// streams, pause and resume (a=inactive, sendonly), new metadata, a
// session refresh.
func (s *srsServer) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	sess := s.session(req)
	if sess == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	if res, ok := s.modify(req, tx, sess); ok {
		_ = tx.Respond(res)
	}
}

// modify applies an in-dialog offer or metadata and returns the 200 to
// send; a bad one is refused and changes nothing.
func (s *srsServer) modify(req *sip.Request, tx sip.ServerTransaction, sess *srsSession) (*sip.Response, bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.lastSIP.Store(time.Now().UnixNano())
	if len(req.Body()) > maxBody {
		s.refuse(req, tx, 413, "Request Entity Too Large", "body too large")
		return nil, false
	}
	var offer []sipdialog.Media
	meta := sess.meta
	reason := "refresh"
	if len(req.Body()) > 0 {
		body, ok := s.readBody(req, tx)
		if !ok {
			return nil, false
		}
		if body.Metadata != nil {
			m, err := siprec.ParseMetadata(body.Metadata)
			if err != nil {
				s.refuse(req, tx, 400, "Bad Request", err.Error())
				return nil, false
			}
			meta = siprec.Merge(sess.meta, m)
			reason = "metadata"
		}
		if body.SDP != nil {
			var err error
			if offer, err = sipdialog.ParseSDP(body.SDP); err != nil {
				s.refuse(req, tx, 400, "Bad Request", "SDP: "+err.Error())
				return nil, false
			}
		}
	}
	if exp, err := sessionExpires(req); err == nil && exp > 0 {
		sess.expires = exp
	}
	s.mu.Lock()
	ended := sess.ended
	s.mu.Unlock()
	if ended {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return nil, false
	}
	if offer != nil {
		before := directions(sess.offer)
		if err := s.negotiate(sess, offer); err != nil {
			s.refuse(req, tx, 488, "Not Acceptable Here", err.Error())
			return nil, false
		}
		reason = streamChange(before, directions(offer), reason)
		for _, p := range sess.ports {
			if p != nil && p.poller == nil { // a port of the new offer
				s.startReader(p)
			}
		}
	}
	sess.meta = meta
	if reason != "refresh" {
		s.eng.msgs <- &srsMsg{kind: srsUpdate, key: sess.key, at: time.Now(), desc: s.describe(sess), reason: reason}
	}
	var res *sip.Response
	if offer != nil {
		res = sip.NewSDPResponseFromRequest(req, sess.answer)
	} else {
		res = sip.NewResponseFromRequest(req, 200, "OK", nil)
	}
	if c, ok := s.contacts[strings.ToUpper(req.Transport())]; ok {
		res.AppendHeader(&c)
	}
	if sess.expires > 0 {
		res.AppendHeader(sip.NewHeader("Session-Expires", fmt.Sprintf("%d;refresher=uac", int(sess.expires.Seconds()))))
		res.AppendHeader(sip.NewHeader("Require", "timer"))
	}
	return res, true
}

// directions are the offer's streams' directions by label (or position).
func directions(offer []sipdialog.Media) map[string]string {
	d := map[string]string{}
	for i, m := range offer {
		if m.Kind != "audio" {
			continue
		}
		k := m.Label
		if k == "" {
			k = strconv.Itoa(i)
		}
		dir := m.Direction
		if m.Addr.Port() == 0 {
			dir = "removed"
		}
		d[k] = dir
	}
	return d
}

// streamChange names what an offer changed: "paused" (every stream
// inactive now), "resumed", "streams" (added or removed), or the reason so
// far.
func streamChange(before, after map[string]string, reason string) string {
	paused := func(d map[string]string) bool {
		for _, v := range d {
			if v != "inactive" && v != "removed" {
				return false
			}
		}
		return len(d) > 0
	}
	switch {
	case !paused(before) && paused(after):
		return "paused"
	case paused(before) && !paused(after):
		return "resumed"
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			return "streams"
		}
	}
	for k, v := range before {
		if after[k] != v {
			return "streams"
		}
	}
	if reason == "refresh" {
		return "media"
	}
	return reason
}

// finish ends a session: its call is ended in the engine, its ports
// closed; bye sends a BYE to the SRC (the SRS ended it).
func (s *srsServer) finish(sess *srsSession, reason verbatimv1.EndReason, damaged string, bye bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	s.mu.Lock()
	if sess.ended {
		s.mu.Unlock()
		return
	}
	sess.ended = true
	delete(s.sessions, sess.key)
	if s.byCallID[sess.sipCallID] == sess {
		delete(s.byCallID, sess.sipCallID)
	}
	if bye {
		s.stats.EndedByRecorder++
	}
	s.mu.Unlock()
	s.closePorts(sess)
	// In no stream's count: the call must not read complete.
	if sess.kernelDrops > 0 && damaged == "" {
		damaged = fmt.Sprintf("the kernel dropped %d datagrams on the session's media ports (receive buffers full: the recorder fell behind)", sess.kernelDrops)
	}
	if sess.oversize > 0 && damaged == "" {
		damaged = fmt.Sprintf("%d datagrams from the SRC were longer than %d bytes and were dropped", sess.oversize, udprecv.MaxDatagram)
	}
	if reason != 0 {
		s.eng.msgs <- &srsMsg{kind: srsEnd, key: sess.key, at: time.Now(), end: reason, damaged: damaged}
	}
	if bye {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sess.dialog.Bye(ctx); err != nil {
			s.log.Warn("BYE to SRC failed", "call-id", sess.sipCallID, "err", err)
		}
	}
	_ = sess.dialog.Close()
}

// overflowed is told by the engine which sessions it ended because Kafka
// was unavailable past the media buffer: they are told (BYE).
func (s *srsServer) overflowed(keys []string, why string) {
	s.mu.Lock()
	var ss []*srsSession
	for _, k := range keys {
		if sess, ok := s.sessions[k]; ok {
			ss = append(ss, sess)
		}
	}
	if s.down.IsZero() {
		s.down = time.Now()
	}
	s.mu.Unlock()
	s.log.Error("SIPREC sessions ended: "+why, "sessions", len(ss))
	for _, sess := range ss {
		go s.finish(sess, 0, "", true) // the engine has ended their calls
	}
}

// endAll ends every open session (the server stops).
func (s *srsServer) endAll(reason verbatimv1.EndReason, damaged string) {
	ss := s.openSessions()
	var wg sync.WaitGroup
	for _, sess := range ss {
		wg.Add(1)
		go func() { defer wg.Done(); s.finish(sess, reason, damaged, true) }()
	}
	wg.Wait()
}

// janitor ends sessions whose session timer expired or that went idle,
// forgets idle rate limiters, and clears the refusal of new sessions once
// Kafka acknowledges again.
func (s *srsServer) janitor(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	every := s.sc.ProgressEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	reported := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if s.sc.Progress != nil && now.Sub(reported) >= every {
				s.sc.Progress(s.snapshot())
				reported = now
			}
			// Sessions whose timer (RFC 4028) expired unrefreshed, or that
			// went idle: the SRS ends them.
			var stale []*srsSession
			for _, sess := range s.openSessions() {
				if !sess.mu.TryLock() {
					continue // changing now: not idle
				}
				last := time.Unix(0, sess.lastSIP.Load())
				if sess.expires > 0 && now.Sub(last) > sess.expires+32*time.Second || s.idle(sess, now) {
					stale = append(stale, sess)
				}
				sess.mu.Unlock()
			}
			s.mu.Lock()
			for a, l := range s.limiters {
				if now.Sub(l.seen) > time.Minute {
					delete(s.limiters, a)
				}
			}
			if !s.down.IsZero() && s.eng.lastAck.Load() > s.down.UnixNano() {
				s.down = time.Time{} // Kafka stored a record since: it is back
			}
			s.mu.Unlock()
			for _, sess := range stale {
				go s.finish(sess, verbatimv1.EndReason_END_REASON_TIMEOUT, "", true)
			}
		}
	}
}

// idle says a session had neither SIP nor RTP for IdleTimeout while none
// of its streams is paused.
func (s *srsServer) idle(sess *srsSession, now time.Time) bool {
	last := sess.lastSIP.Load()
	for i, p := range sess.ports {
		if p == nil {
			continue
		}
		if sess.offer[i].Direction == "inactive" {
			return false
		}
		last = max(last, p.last.Load())
	}
	return now.Sub(time.Unix(0, last)) > s.sc.IdleTimeout
}

// allow takes a token of the source's INVITE rate.
func (s *srsServer) allow(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[a]
	if !ok {
		if len(s.limiters) >= 100_000 { // a spoofed-source flood: bounded
			return false
		}
		l = &srsLimiter{lim: rate.NewLimiter(rate.Limit(s.sc.InviteRate), s.sc.InviteBurst)}
		s.limiters[a] = l
	}
	l.seen = time.Now()
	return l.lim.Allow()
}

// nonceLife is how long a digest challenge's nonce is good for.
const nonceLife = 5 * time.Minute

// nonce makes a digest nonce that needs no state to check: its time and an
// HMAC of it under the server's secret.
func (s *srsServer) nonce(now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 36)
	m := hmac.New(sha256.New, s.secret[:])
	m.Write([]byte(ts))
	return ts + "." + hex.EncodeToString(m.Sum(nil)[:16])
}

func (s *srsServer) nonceValid(n string, now time.Time) bool {
	ts, _, ok := strings.Cut(n, ".")
	if !ok {
		return false
	}
	t, err := strconv.ParseInt(ts, 36, 64)
	if err != nil || now.Sub(time.Unix(t, 0)) > nonceLife || time.Unix(t, 0).After(now.Add(time.Minute)) {
		return false
	}
	return hmac.Equal([]byte(n), []byte(s.nonce(time.Unix(t, 0))))
}

// authorized checks an INVITE's digest credentials (RFC 3261 22.4, RFC
// 8760); without valid ones it answers 401 with a challenge and returns
// false.
func (s *srsServer) authorized(req *sip.Request, tx sip.ServerTransaction) bool {
	now := time.Now()
	d := s.sc.Digest
	if h := req.GetHeader("Authorization"); h != nil {
		cr, err := digest.ParseCredentials(h.Value())
		if err == nil && cr.Username == d.User && cr.Realm == d.Realm && s.nonceValid(cr.Nonce, now) {
			chal := &digest.Challenge{Realm: d.Realm, Nonce: cr.Nonce, Algorithm: cr.Algorithm, Opaque: cr.Opaque}
			if cr.QOP != "" {
				chal.QOP = []string{cr.QOP}
			}
			want, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: cr.URI, Username: d.User,
				Password: d.Password, Count: cr.Nc, Cnonce: cr.Cnonce})
			if err == nil && hmac.Equal([]byte(want.Response), []byte(cr.Response)) {
				return true
			}
		}
		s.mu.Lock()
		s.stats.Refused[401]++
		s.stats.LastRefusal = "401 Unauthorized: wrong digest credentials from " + req.Source()
		s.mu.Unlock()
	}
	chal := &digest.Challenge{Realm: d.Realm, Nonce: s.nonce(now), Algorithm: "SHA-256", QOP: []string{"auth"}}
	md5 := &digest.Challenge{Realm: d.Realm, Nonce: chal.Nonce, Algorithm: "MD5", QOP: []string{"auth"}}
	res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
	res.AppendHeader(sip.NewHeader("WWW-Authenticate", chal.String()))
	res.AppendHeader(sip.NewHeader("WWW-Authenticate", md5.String()))
	_ = tx.Respond(res)
	return false
}
