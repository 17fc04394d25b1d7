package ingest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
	"github.com/verbatimrec/verbatim/ingest/internal/rtpbatch"
	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/ingest/internal/siptcp"
	"github.com/verbatimrec/verbatim/ingest/internal/srtpdec"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Producer is where ingest writes records; *kgo.Client satisfies it.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

var _ Producer = (*kgo.Client)(nil)

// Config configures capture ingestion.
type Config struct {
	// Tenant owns everything ingested. Required.
	Tenant string
	// Keys makes the per-call data keys. Required.
	Keys keys.Manager
	// Producer receives the records. Required.
	Producer Producer
	// RTPTimeout ends a call whose BYE never comes once neither SIP nor RTP
	// has been seen for it this long (capture time). Default 30 s.
	RTPTimeout time.Duration
	// InviteTimeout ends a call never answered once neither SIP nor RTP
	// has been seen for it this long (capture time): a flood of INVITEs
	// nobody answers is not kept for ever. Default 3 minutes, RFC 3261's
	// Timer C.
	InviteTimeout time.Duration
	// Producer name in the envelope. Default "verbatim-ingest".
	Source string
	// Logger for warnings. Default discard.
	Logger *slog.Logger
	// Progress, if set, is called about every ProgressEvery packets and
	// at the end.
	Progress      func(Report)
	ProgressEvery uint64
	// PCI records in PCI DSS mode: DTMF sent in SIP INFO is stored as "*",
	// masked. (Digits in the media are masked by the processor.)
	PCI bool
	// SRTPKeys decrypt SRTP whose keys no captured SDP gives (keys known
	// out of band), for RTP found without signalling.
	SRTPKeys []SRTPKey
	// Local names the organisation's own domains and networks, from
	// which a call's direction is derived (CallStarted.direction).
	Local Local
}

// SRTPKey is an SDES master key for RTP sent to Dst (any destination when
// Dst is the zero value).
type SRTPKey struct {
	Dst   netip.AddrPort
	Suite string // e.g. AES_CM_128_HMAC_SHA1_80
	Key   []byte // master key || master salt
}

// String never shows the key.
func (k SRTPKey) String() string { return fmt.Sprintf("SRTPKey{%v %s}", k.Dst, k.Suite) }

// ParseSRTPKey parses "[ADDR:PORT=]SUITE:inline:BASE64", the form of
// RFC 4568's key parameter.
func ParseSRTPKey(v string) (SRTPKey, error) {
	var k SRTPKey
	if dst, rest, ok := strings.Cut(v, "="); ok {
		ap, err := netip.ParseAddrPort(dst)
		if err != nil {
			return k, fmt.Errorf("ingest: srtp key destination %q: %w", dst, err)
		}
		k.Dst, v = ap, rest
	}
	suite, inline, ok := strings.Cut(v, ":")
	if !ok {
		return k, errors.New("ingest: srtp key: want SUITE:inline:BASE64")
	}
	c, err := sipdialog.ParseCrypto("1 " + suite + " " + inline)
	if err != nil {
		return k, fmt.Errorf("ingest: srtp key: %w", err)
	}
	if _, err := srtpdec.New(c.Suite, c.Key); err != nil {
		return k, fmt.Errorf("ingest: srtp key: %w", err)
	}
	k.Suite, k.Key = c.Suite, c.Key
	return k, nil
}

func (c *Config) setDefaults() {
	if c.RTPTimeout <= 0 {
		c.RTPTimeout = 30 * time.Second
	}
	if c.InviteTimeout <= 0 {
		c.InviteTimeout = 3 * time.Minute
	}
	if c.Source == "" {
		c.Source = "verbatim-ingest"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = 100_000
	}
}

// Validate reports missing settings.
func (c Config) Validate() error {
	var errs []error
	if err := keys.ValidateTenant(c.Tenant); err != nil {
		errs = append(errs, err)
	}
	if c.Keys == nil {
		errs = append(errs, errors.New("ingest: key manager is required"))
	}
	if c.Producer == nil {
		errs = append(errs, errors.New("ingest: producer is required"))
	}
	return errors.Join(errs...)
}

// Report says what one capture produced and what was skipped, with reasons.
type Report struct {
	Pcap         pcapread.Stats
	SIP          sipdialog.Stats
	Calls        int
	RTPPackets   uint64
	Batches      uint64
	UnmatchedUDP uint64 // UDP that is neither SIP nor media of a known call
	UnmatchedTCP uint64 // TCP segments that are not SIP
	// InvitesExpired are calls never answered that were ended after
	// Config.InviteTimeout without SIP or RTP (a flood of INVITEs, lost
	// responses).
	InvitesExpired uint64
	// KernelDrops counts frames a live capture lost because its socket
	// buffer was full (the recorder fell behind): every one is reported.
	KernelDrops uint64
	// ZRTPPackets are key-agreement messages on media ports: their calls'
	// media is SRTP whose keys cannot be captured, kept encrypted.
	ZRTPPackets uint64
	// Digits sent in SIP INFO.
	Digits uint64
	// StrayPackets are RTP packets of sources that never sent two in a row
	// on a stream (a spray of random SSRCs): counted, not recorded.
	StrayPackets uint64
	// RTPOnlyCalls are the calls (of Calls) found by their RTP alone.
	RTPOnlyCalls int
	// EncryptedFlows are the streams found by their RTP alone whose
	// payloads carry an SRTP authentication tag and whose keys were not
	// given: kept encrypted, labelled "encrypted: keys not captured".
	EncryptedFlows uint64
	// RTCP packets read for call quality, and those that did not parse
	// (LastRTCPError says the last reason).
	RTCPPackets, BadRTCP uint64
	LastRTCPError        string
	// SRTP packets dropped: forged or corrupted (authentication failed),
	// and replayed; LastSRTPError says the last reason.
	SRTPAuthFailures, SRTPReplayed uint64
	LastSRTPError                  string
	SIPOverTCP                     siptcp.Stats
	BadRTP                         uint64 // too short or not version 2, on a known media port
	Truncated                      bool
	// TruncatedAt says where a truncated capture ended.
	TruncatedAt  string
	LastSIPError string
	LastRTPError string
	Elapsed      time.Duration
}

type stream struct {
	id   string
	call *call
	srtp *srtpdec.Decryptor // nil: plain RTP, or SRTP with unknown keys
	// srtpPrev is the decryptor of the keys srtp replaced (a re-INVITE or
	// UPDATE with new keys): packets sent before the new keys applied
	// still authenticate under it, until one authenticates under srtp.
	srtpPrev *srtpdec.Decryptor
	srtpKey  [sha256.Size]byte // fingerprint of srtp's suite and key
	// The stream's current RTP source, and a packet of another source
	// held until a second one in sequence confirms it (a transfer, a
	// restarted sender); a source that never sends two in a row is stray.
	srcSet bool
	src    uint32
	cand   struct {
		ssrc uint32
		seq  uint16
		at   time.Time
		pkt  []byte
		held bool
	}
	zrtp  bool           // ZRTP seen: the media is SRTP with keys no capture has
	from  netip.AddrPort // where its packets come from (a NAT's address, maybe)
	flows []flowKey      // sender's SDP address -> receiver's, in pcapIngest.byFlow
	// sharedDst says another call\'s media go to this stream\'s destination
	// too: packets to it are matched by both ends (byFlow) first.
	sharedDst bool
	batcher   *rtpbatch.Batcher
	sent      verbatimv1.StreamMedia // what has been produced, for MediaEnded
}

// heldRecord is a record of a call whose data key is not yet
// acknowledged, with its promise.
type heldRecord struct {
	rec     *kgo.Record
	promise func(*kgo.Record, error)
}

type call struct {
	id string
	// keyAcked receives the result of producing the call's data key; until
	// it has (keyReady), the call's other records wait in held, in order.
	keyAcked chan error
	keyReady bool
	held     []heldRecord
	// onReady, if set, is told when the key is stored and the held records
	// are produced (nil), or that the key could not be stored.
	onReady func(error)
	// abandoned: a SIPREC session refused before it was answered; nothing
	// of it is produced.
	abandoned bool
	started   time.Time // when the call began (SIPREC sessions)
	// damaged says what the capture lost while the call was open (a
	// damaged or truncated file), for its ledger; empty if nothing.
	damaged string
	conv    string // conversation id
	keyID   string
	dialog  *sipdialog.Call // nil for a call found by its RTP alone
	sealer  *seal.Sealer
	streams map[netip.AddrPort]*stream // by RTP destination
	desc    []*verbatimv1.Stream       // as last negotiated
	ended   bool
	quality map[uint32]*rtcpQuality // by reported SSRC, from RTCP
}

type pcapIngest struct {
	cfg   Config
	ctx   context.Context  //nolint:containedctx // lifetime of one Pcap call
	calls map[string]*call // by SIP Call-ID
	// byAddr maps a stream's destination to it, byFlow both of its ends
	// (the sender's SDP address to the receiver's). A packet is matched by
	// its destination, one lookup; where calls' media share a destination
	// (a media server answering every call from one address), by both
	// ends first, so each call keeps its own packets, and by its
	// destination only when its source is not the sender's SDP address (a
	// NAT). A later call never takes over a flow an earlier one holds.
	byFlow  map[flowKey]*stream
	byAddr  map[netip.AddrPort]*stream
	tracker *sipdialog.Tracker
	tcp     *siptcp.Reassembler
	rtpOnly rtpOnly
	report  Report
	err     error
	pending []sipdialog.Event
	// scratch for the batches, which are marshalled as soon as they are
	// cut, and marshal buffers given back when Kafka has a record
	scratch rtpbatch.Shared
	values  sync.Pool

	// source is where the packets come from: a file, or a live interface.
	source verbatimv1.CaptureSource
	// pendingKeys are the calls whose data key is not yet acknowledged.
	pendingKeys []*call

	produceMu  sync.Mutex
	produceErr error // first failed delivery

	// server says the engine runs the SIPREC server: a call's failure is
	// its own, not the end of the ingest.
	server bool
	srs    *srsEngine
}

// Pcap ingests one pcap or pcapng capture: SIP dialogs become call events,
// their RTP becomes sealed PacketBatch events, and every call gets a data
// key on the keys topic first. Bad frames and messages are counted in the
// Report and skipped; a truncated file ends the read and the report says so.
// It returns when everything has been produced and flushed.
func Pcap(ctx context.Context, cfg Config, r io.Reader) (Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	rd, err := pcapread.Open(r)
	if err != nil {
		return Report{}, err
	}
	return run(ctx, cfg, rd, nil)
}

// run ingests what rd yields until it ends (a file) or ctx ends (live,
// when drops is set: it reads the kernel's drop counter).
func run(ctx context.Context, cfg Config, rd *pcapread.Reader, drops func() (uint64, error)) (Report, error) {
	start := time.Now()
	live := drops != nil
	pctx := ctx
	if live { // ctx stops the capture; what was captured is still produced
		pctx = context.WithoutCancel(ctx)
	}
	in := &pcapIngest{cfg: cfg, ctx: pctx, calls: map[string]*call{}, byFlow: map[flowKey]*stream{}, byAddr: map[netip.AddrPort]*stream{}, tcp: siptcp.New(),
		rtpOnly: rtpOnly{candidates: map[flowKey]*candidate{}, flows: map[flowKey]*stream{}, calls: map[pairKey]*rtpCall{}},
		source:  verbatimv1.CaptureSource_CAPTURE_SOURCE_PCAP_FILE}
	if live {
		in.source = verbatimv1.CaptureSource_CAPTURE_SOURCE_LIVE_INTERFACE
	}
	in.tracker = sipdialog.NewTracker(func(e sipdialog.Event) { in.pending = append(in.pending, e) })
	var last time.Time
	progress := func() {
		in.report.Pcap, in.report.SIP, in.report.Elapsed = rd.Stats(), in.tracker.Stats(), time.Since(start)
		in.report.SIPOverTCP = in.tcp.Stats()
		if live {
			if n, err := drops(); err == nil {
				in.report.KernelDrops = n
			}
		}
	}
	var damaged, dropped uint64
	// checkDrops marks the calls open while the kernel dropped frames:
	// they may miss packets no sequence number shows (a whole burst).
	checkDrops := func() {
		if !live {
			return
		}
		if n, err := drops(); err == nil && n > dropped {
			in.markDamaged(fmt.Sprintf("the kernel dropped %d frames of the capture while the call was open", n-dropped))
			dropped = n
		}
	}
	for in.err == nil {
		p, err := rd.Next()
		if st := rd.Stats(); st.Damaged != damaged {
			// Frames were skipped here: every call open now may have lost
			// packets no counter can see.
			damaged = st.Damaged
			in.markDamaged(st.LastDamage)
		}
		if errors.Is(err, pcapread.ErrNoPacket) { // live and quiet
			if ctx.Err() != nil {
				break
			}
			in.settleKeys(nil) // quiet: the records of calls whose key came back
			if now := time.Now(); now.Sub(last) >= time.Second {
				checkDrops()
				in.expire(now)
				last = now
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, pcapread.ErrTruncated) && !live {
			in.report.Truncated = true
			in.report.TruncatedAt = strings.TrimPrefix(err.Error(), pcapread.ErrTruncated.Error()+": ")
			in.markDamaged(in.report.TruncatedAt)
			cfg.Logger.Warn("capture truncated; keeping everything before the damage", "err", err)
			break
		}
		if err != nil {
			return in.report, err
		}
		if ctx.Err() != nil {
			if live {
				break // stopped: record what was captured
			}
			return in.report, ctx.Err()
		}
		in.packet(p)
		if p.Time.Sub(last) >= time.Second {
			checkDrops()
			in.expire(p.Time)
			last = p.Time
		}
		if cfg.Progress != nil && rd.Stats().Frames%cfg.ProgressEvery == 0 {
			progress()
			cfg.Progress(in.report)
		}
	}
	// The capture is over: no more packets can come. A file's open calls
	// timed out at their last activity; a live capture was stopped.
	reason := sipdialog.EndTimeout
	if live {
		reason = sipdialog.EndCaptureEnded
	}
	checkDrops()
	in.tracker.EachOpen(func(c *sipdialog.Call) { in.tracker.End(c, c.LastActivity, reason) })
	in.drain()
	in.rtpOnly.endAll(in)
	fctx := ctx
	if live { // ctx is what stopped the capture: still deliver what it saw
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
	}
	in.settleKeys(fctx) // every call's records, once its key is stored
	if err := cfg.Producer.Flush(fctx); err != nil && in.err == nil {
		in.err = fmt.Errorf("ingest: flush: %w", err)
	}
	// Flush returns once every record has succeeded or failed; a failed
	// one means the capture was not fully recorded.
	in.produceMu.Lock()
	if in.err == nil {
		in.err = in.produceErr
	}
	in.produceMu.Unlock()
	progress()
	if cfg.Progress != nil {
		cfg.Progress(in.report)
	}
	if in.err == nil && (in.report.Truncated || in.report.Pcap.Damaged > 0) {
		// Everything readable is recorded, but input was lost: say so
		// with a failure, not only a warning.
		what := in.report.TruncatedAt
		if in.report.Pcap.Damaged > 0 {
			what = fmt.Sprintf("%d damaged stretches, %d bytes skipped (first: %s)", in.report.Pcap.Damaged, in.report.Pcap.DamagedBytes, in.report.Pcap.FirstDamage)
			if in.report.Truncated {
				what += "; " + in.report.TruncatedAt
			}
		}
		return in.report, fmt.Errorf("%w: %s", ErrCaptureDamaged, what)
	}
	return in.report, in.err
}

// ErrCaptureDamaged is returned, with the Report of everything that was
// recorded, when a capture file was damaged or truncated: the calls open
// then carry the damage in their ledgers.
var ErrCaptureDamaged = errors.New("ingest: capture damaged, input lost")

// markDamaged notes, in every call open now, what the capture lost.
func (in *pcapIngest) markDamaged(what string) {
	mark := func(c *call) {
		if c != nil && !c.ended && c.damaged == "" {
			c.damaged = what
		}
	}
	for _, c := range in.calls {
		mark(c)
	}
	for _, rc := range in.rtpOnly.calls {
		mark(rc.c)
	}
}

func isSIP(p *pcapread.Packet) bool {
	if p.Src.Port() == 5060 || p.Dst.Port() == 5060 {
		return true
	}
	b := p.Payload
	if len(b) < 8 {
		return false
	}
	// Content detection for SIP on other ports: a status line or a method.
	switch string(b[:4]) {
	case "SIP/", "INVI", "ACK ", "BYE ", "CANC", "OPTI", "REGI", "INFO", "PRAC", "UPDA", "REFE", "NOTI", "SUBS", "MESS":
		return true
	}
	return false
}

func (in *pcapIngest) packet(p *pcapread.Packet) {
	if p.Proto == pcapread.TCP {
		in.tcpSegment(p)
		return
	}
	if isSIP(p) {
		in.sip(p, p.Payload)
		return
	}
	s, ok := in.byAddr[p.Dst]
	if ok && s.sharedDst {
		// Other calls' media go to this address too: the flow's both
		// ends say whose packet this is.
		if f, mine := in.byFlow[flowKey{p.Src, p.Dst}]; mine && !f.call.ended {
			s = f
		}
	}
	if !ok || s.call.ended {
		// RTCP goes to the RTP port + 1 (RFC 3550 §11).
		if p.Dst.Port()%2 == 1 {
			if st, ok := in.byAddr[netip.AddrPortFrom(p.Dst.Addr(), p.Dst.Port()-1)]; ok && !st.call.ended {
				in.rtcpOf(st, p.Payload)
				return
			}
		}
		if !in.rtpOnly.packet(in, p) {
			in.report.UnmatchedUDP++
		}
		return
	}
	if len(in.rtpOnly.candidates) > 0 {
		in.rtpOnly.handOver(in, flowKey{p.Src, p.Dst}, s)
	}
	in.media(s, p)
}

// media adds one RTP packet to its stream, decrypting SRTP when the
// stream's key is known. A packet that fails authentication or replays an
// earlier one is dropped and counted, never recorded.
func (in *pcapIngest) media(s *stream, p *pcapread.Packet) {
	pkt := p.Payload
	s.from = p.Src
	// RTCP multiplexed on the RTP port (RFC 5761): packet types 200-204.
	if len(pkt) >= 8 && pkt[0]>>6 == 2 && pkt[1] >= 200 && pkt[1] <= 204 {
		in.rtcpOf(s, pkt)
		return
	}
	// ZRTP (RFC 6189) shares the media port: its messages start 0x1 and
	// carry the "ZRTP" cookie. What follows it is SRTP keyed in-band.
	if len(pkt) >= 12 && pkt[0]>>4 == 1 && string(pkt[4:8]) == "ZRTP" {
		in.report.ZRTPPackets++
		s.zrtp = true
		return
	}
	if s.srtp != nil {
		plain, err := s.srtp.Decrypt(pkt)
		switch {
		case err == nil:
			s.srtpPrev = nil // the new keys apply from here on
		case errors.Is(err, srtpdec.ErrAuth) && s.srtpPrev != nil:
			plain, err = s.srtpPrev.Decrypt(pkt) // sent before the new keys applied
		}
		switch {
		case err == nil:
			pkt = plain
		case errors.Is(err, srtpdec.ErrReplay):
			in.report.SRTPReplayed++
			s.sent.SrtpReplayed++
			in.report.LastSRTPError = fmt.Sprintf("frame %d: %v", p.Frame, err)
			return
		case errors.Is(err, srtpdec.ErrAuth):
			in.report.SRTPAuthFailures++
			s.sent.SrtpAuthFailures++
			in.report.LastSRTPError = fmt.Sprintf("frame %d: %v", p.Frame, err)
			return
		default: // too short to be SRTP: malformed, not forged
			in.report.BadRTP++
			in.report.LastRTPError = fmt.Sprintf("frame %d: %v", p.Frame, err)
			return
		}
	}
	if len(pkt) >= 12 && pkt[0]>>6 == 2 { // RTP: what is not is refused by the batcher, as bad RTP
		ssrc, seq := binary.BigEndian.Uint32(pkt[8:]), binary.BigEndian.Uint16(pkt[2:])
		switch {
		case !s.srcSet:
			s.srcSet, s.src = true, ssrc
		case ssrc == s.src:
		case s.cand.held && s.cand.ssrc == ssrc && seq == s.cand.seq+1:
			// Confirmed: the stream's source is now this one.
			s.src, s.cand.held = ssrc, false
			in.addRTP(s, p.Frame, s.cand.at, s.cand.pkt)
		default:
			if s.cand.held {
				s.sent.StrayPackets++
				in.report.StrayPackets++
			}
			s.cand.held, s.cand.ssrc, s.cand.seq, s.cand.at = true, ssrc, seq, p.Time
			s.cand.pkt = append(s.cand.pkt[:0], pkt...)
			return
		}
	}
	in.addRTP(s, p.Frame, p.Time, pkt)
}

// addRTP batches one RTP packet of stream s.
func (in *pcapIngest) addRTP(s *stream, frame uint64, at time.Time, pkt []byte) {
	done, err := s.batcher.Add(at, pkt)
	if err != nil {
		in.report.BadRTP++
		in.report.LastRTPError = fmt.Sprintf("frame %d: %v", frame, err)
		return
	}
	in.report.RTPPackets++
	if s.call.dialog != nil {
		s.call.dialog.LastActivity = at
	}
	if done != nil {
		in.batch(s, done)
	}
}

// sip hands one SIP message to the dialog tracker.
func (in *pcapIngest) sip(p *pcapread.Packet, msg []byte) {
	if err := in.tracker.Handle(p.Time, p.Src, msg); err != nil {
		in.report.LastSIPError = fmt.Sprintf("frame %d: %v", p.Frame, err)
		in.cfg.Logger.Warn("bad SIP message skipped", "frame", p.Frame, "err", err)
	}
	in.drain()
}

// tcpSegment reassembles SIP over TCP: on port 5060, or on any port once a
// connection's data starts like SIP. SIP over TLS (5061) stays opaque.
func (in *pcapIngest) tcpSegment(p *pcapread.Packet) {
	if !(p.Src.Port() == 5060 || p.Dst.Port() == 5060 || in.tcp.Known(p.Src, p.Dst) || (len(p.Payload) > 0 && isSIP(p))) {
		in.report.UnmatchedTCP++
		return
	}
	in.tcp.Segment(p.Time, p.Src, p.Dst, p.TCPSeq, p.TCPSYN, p.TCPFIN, p.TCPRST, p.Payload, func(msg []byte) { in.sip(p, msg) })
}

// forgetAfter is how long an ended call is remembered, so that late
// retransmissions of its messages are not taken for a new call.
const forgetAfter = 64 * time.Second

// tcpIdle is how long a SIP connection's half-framed data is kept.
const tcpIdle = 10 * time.Minute

func (in *pcapIngest) expire(now time.Time) {
	in.tracker.EachOpen(func(c *sipdialog.Call) {
		switch idle := now.Sub(c.LastActivity); {
		case c.State == sipdialog.StateEstablished && idle > in.cfg.RTPTimeout:
			in.tracker.End(c, c.LastActivity, sipdialog.EndTimeout)
		case c.State == sipdialog.StateOffered && idle > in.cfg.InviteTimeout:
			in.report.InvitesExpired++
			in.tracker.End(c, c.LastActivity, sipdialog.EndTimeout)
		}
	})
	in.drain()
	in.rtpOnly.expire(in, now)
	in.tcp.Expire(now.Add(-tcpIdle))
	// Memory holds open calls only: drop what ended long enough ago.
	if in.tracker.Forget(now.Add(-forgetAfter)) > 0 {
		for id, c := range in.calls {
			if _, ok := in.tracker.Call(id); !ok && c.ended {
				delete(in.calls, id)
			}
		}
	}
}

// drain turns the tracker's events into records.
func (in *pcapIngest) drain() {
	for len(in.pending) > 0 && in.err == nil {
		e := in.pending[0]
		in.pending = in.pending[1:]
		switch e.Kind {
		case sipdialog.EventStarted:
			in.started(e)
		case sipdialog.EventAnswered, sipdialog.EventUpdated:
			in.updated(e)
		case sipdialog.EventEnded:
			in.ended(e)
		case sipdialog.EventDigit:
			in.digit(e)
		}
	}
	in.pending = in.pending[:0]
}

func (in *pcapIngest) produce(topic, key string, c *call, kind string, at time.Time, m proto.Message) {
	in.produceThen(topic, key, c, kind, at, m, nil)
}

// produceThen is produce, calling acked (if not nil) with the record's
// result once the broker has answered.
func (in *pcapIngest) produceThen(topic, key string, c *call, kind string, at time.Time, m proto.Message, acked func(error)) {
	env := schemas.Envelope{
		ID:     schemas.DerivedID(c.id, kind, at.UTC().Format(time.RFC3339Nano)),
		Tenant: in.cfg.Tenant, CallID: c.id, OccurredAt: at, Producer: in.cfg.Source,
	}
	// The value is marshalled into a buffer of the pool, given back once
	// the producer is done with the record: a media batch is some 9 KB,
	// 10,000 of them a second at 5,000 calls.
	buf, _ := in.values.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	rec, err := schemas.NewRecordAppend(topic, []byte(key), env, m, (*buf)[:0])
	if err != nil {
		in.err = err
		return
	}
	size := int64(len(rec.Value))
	if in.srs != nil {
		in.srs.outstanding.Add(size)
	}
	promise := func(r *kgo.Record, err error) {
		if in.srs != nil {
			in.srs.outstanding.Add(-size)
			if err == nil {
				in.srs.lastAck.Store(time.Now().UnixNano())
			}
		}
		*buf = r.Value[:0]
		in.values.Put(buf)
		if acked != nil {
			acked(err)
		}
		if err == nil {
			return
		}
		in.produceMu.Lock() // promises run on the client's goroutines
		if in.produceErr == nil {
			in.produceErr = fmt.Errorf("ingest: produce to %s: %w", topic, err)
		}
		in.produceMu.Unlock()
	}
	in.settleKeys(nil)
	if topic != schemas.TopicKeys && c != nil && !c.keyReady {
		// The key is in the registry, acknowledged, before any record that
		// names it is produced: a reader holding such a record and not
		// finding the key after reading the registry to its end knows the
		// key is missing, not late (keyreg.ErrNotFound). Held, not waited
		// for: the capture goes on meanwhile.
		c.held = append(c.held, heldRecord{rec, promise})
		return
	}
	in.cfg.Producer.Produce(in.ctx, rec, promise)
}

// settleKeys produces, in order, the held records of every call whose key
// has been acknowledged since; with a wait context, it waits (until that
// ends) for every key still on its way. A key the broker refused fails the
// ingest: nothing sealed under it could ever be read.
func (in *pcapIngest) settleKeys(wait context.Context) {
	kept := in.pendingKeys[:0]
	for _, c := range in.pendingKeys {
		if c.abandoned { // its key, if it comes, names no record
			continue
		}
		var err error
		if wait != nil {
			select {
			case err = <-c.keyAcked:
			case <-wait.Done():
				err = wait.Err()
			}
		} else {
			select {
			case err = <-c.keyAcked:
			default:
				kept = append(kept, c)
				continue
			}
		}
		if err != nil {
			err = fmt.Errorf("ingest: data key for call %s not stored in the key registry: %w", c.id, err)
			if in.err == nil && !in.server {
				in.err = err
			}
			c.held = nil
			if c.onReady != nil {
				c.onReady(err)
			}
			continue
		}
		c.keyReady = true
		for _, h := range c.held {
			in.cfg.Producer.Produce(in.ctx, h.rec, h.promise)
		}
		c.held = nil
		if c.onReady != nil {
			c.onReady(nil)
		}
	}
	clear(in.pendingKeys[len(kept):])
	in.pendingKeys = kept
}

func (in *pcapIngest) sealMsg(c *call, m proto.Message) *verbatimv1.Sealed {
	b, err := proto.Marshal(m)
	if err == nil {
		var s *verbatimv1.Sealed
		s, err = c.sealer.Seal(nil, string(m.ProtoReflect().Descriptor().FullName()), b)
		if err == nil {
			return s
		}
	}
	in.err = fmt.Errorf("ingest: seal: %w", err)
	return nil
}

func (in *pcapIngest) started(e sipdialog.Event) {
	d := e.Call
	c := in.newCall(schemas.DerivedID(in.cfg.Tenant, d.CallID, d.InvitedAt.UTC().Format(time.RFC3339Nano)), e.At)
	if c == nil {
		return
	}
	c.dialog = d
	c.conv = in.conversation(d, c.id)
	in.calls[d.CallID] = c
	ev := &verbatimv1.CallStarted{
		CallId: c.id, StartedAt: timestamppb.New(d.InvitedAt), Source: in.source,
		DataKeyId: c.keyID, ConversationId: c.conv,
		Signalling:  in.sealMsg(c, &verbatimv1.SignallingIdentity{SipCallId: d.CallID, FromTag: d.Caller.Tag}),
		SessionKeys: sessionKeys(in.cfg.Tenant, []string{d.SessionID}, []string{d.CallID}),
	}
	ev.Participants, ev.Streams = in.parties(c)
	ev.Direction = in.cfg.Local.Direction(d.Caller.URI, d.Caller.Signalling, d.Callee.URI, d.Callee.Signalling)
	in.produce(schemas.TopicCalls, c.id, c, "started", e.At, ev)
}

// conversation links a transfer to the call it continues: the call its
// INVITE replaces, or the call whose REFER named its target.
func (in *pcapIngest) conversation(d *sipdialog.Call, own string) string {
	if d.Replaces != "" {
		if prev, ok := in.calls[d.Replaces]; ok {
			return prev.conv
		}
	}
	if d.ReferredBy != "" {
		target := uriKey(d.Callee.URI)
		for _, prev := range in.calls {
			if prev.dialog != nil && prev.dialog.ReferTo != "" && uriKey(prev.dialog.ReferTo) == target {
				return prev.conv
			}
		}
	}
	return own
}

// uriKey reduces a SIP URI, or a name-addr holding one, to user@host.
func uriKey(s string) string {
	if i := strings.IndexByte(s, '<'); i >= 0 {
		s = s[i+1:]
		if j := strings.IndexByte(s, '>'); j >= 0 {
			s = s[:j]
		}
	}
	s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "sips:"), "sip:")
	s, _, _ = strings.Cut(s, ";")
	s, _, _ = strings.Cut(s, "?")
	if at := strings.IndexByte(s, '@'); at >= 0 {
		if host, _, ok := strings.Cut(s[at+1:], ":"); ok {
			s = s[:at+1] + host
		}
	}
	return strings.ToLower(s)
}

// newCall makes a call's data key and announces it on the keys topic.
func (in *pcapIngest) newCall(id string, at time.Time) *call {
	dk, err := in.cfg.Keys.GenerateDataKey(in.ctx, in.cfg.Tenant)
	if err != nil {
		in.err = fmt.Errorf("ingest: data key for call %s: %w", id, err)
		return nil
	}
	c, err := in.newCallWithKey(id, at, dk, nil)
	if err != nil {
		in.err = err
		return nil
	}
	return c
}

// newCallWithKey announces a call whose data key dk is made; acked, if not
// nil, is called (on a client goroutine) with the result of producing it.
func (in *pcapIngest) newCallWithKey(id string, at time.Time, dk keys.DataKey, acked func(error)) (*call, error) {
	c := &call{id: id, streams: map[netip.AddrPort]*stream{}}
	var err error
	// The key id names the key, not only the call: a capture ingested
	// again (after a crash, or by mistake) gives its calls the same ids
	// and new keys, and a key id of the call alone would replace the
	// first key in the compacted registry, leaving the first ingest's
	// media and identities unreadable. DataKey.call_id still finds every
	// key of a call, for erasure.
	kh := sha256.Sum256(dk.Wrapped.Ciphertext)
	c.keyID = "dk-" + c.id + "-" + hex.EncodeToString(kh[:4])
	if c.sealer, err = seal.New(in.cfg.Tenant, c.keyID, dk.Plaintext); err != nil {
		return nil, err
	}
	in.report.Calls++
	// The call's other records wait for this one's acknowledgement
	// (produceThen, settleKeys).
	c.keyAcked = make(chan error, 1)
	in.pendingKeys = append(in.pendingKeys, c)
	in.produceThen(schemas.TopicKeys, c.keyID, c, "key/"+c.keyID, at, &verbatimv1.DataKey{ // its event id names the key too
		KeyId: c.keyID, Tenant: in.cfg.Tenant, WrappedDek: dk.Wrapped.Ciphertext, KekName: dk.Wrapped.KEKName,
		KekVersion: dk.Wrapped.KEKVersion, KeyManager: in.cfg.Keys.Kind(), CreatedAt: timestamppb.New(at),
		Purpose: "call", CallId: c.id,
	}, func(err error) {
		c.keyAcked <- err
		if acked != nil {
			acked(err)
		}
	})
	return c, nil
}

// streamID names the stream a participant ("caller", "callee") sends on
// its i-th SDP audio line.
func streamID(sender string, i int) string {
	if i == 0 {
		return sender + "-audio"
	}
	return fmt.Sprintf("%s-audio-%d", sender, i)
}

// sdesDecryptor returns a decryptor for the sender's key of a stream, and
// the key's fingerprint, or nil (the stream is then kept encrypted, as not
// decodable). sender are the crypto attributes of the sender's SDP, other
// those of the other side's. When the sender offered several and the other
// side answered one, the sender encrypts with its key of the tag answered
// (RFC 4568 5.1.2), not with the first it listed; otherwise with the
// first it lists that is supported.
func (in *pcapIngest) sdesDecryptor(c *call, streamID string, sender, other []sipdialog.Crypto) (*srtpdec.Decryptor, [sha256.Size]byte) {
	cs := sender
	if len(sender) > 1 && len(other) == 1 {
		if i := slices.IndexFunc(sender, func(k sipdialog.Crypto) bool { return k.Tag == other[0].Tag }); i >= 0 {
			cs = sender[i : i+1]
		}
	}
	for _, k := range cs {
		if !srtpdec.Supported(k.Suite) || k.MKILen != 0 {
			continue
		}
		d, err := srtpdec.New(k.Suite, k.Key)
		if err != nil {
			in.report.LastSRTPError = fmt.Sprintf("call %s stream %s: %v", c.id, streamID, err)
			continue
		}
		return d, sha256.Sum256(append([]byte(k.Suite+"\x00"), k.Key...))
	}
	return nil, [sha256.Size]byte{}
}

// parties describes the participants and their streams, and (re)maps the
// RTP destinations to streams: what the caller sends goes to the callee's
// SDP address, and the other way round.
func (in *pcapIngest) parties(c *call) ([]*verbatimv1.Participant, []*verbatimv1.Stream) {
	d := c.dialog
	ps := []*verbatimv1.Participant{
		{ParticipantId: "caller", Role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER,
			Identity: in.sealMsg(c, &verbatimv1.ParticipantIdentity{Uri: d.Caller.URI, Number: d.Caller.User, DisplayName: d.Caller.DisplayName})},
		{ParticipantId: "callee", Role: verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLEE,
			Identity: in.sealMsg(c, &verbatimv1.ParticipantIdentity{Uri: d.Callee.URI, Number: d.Callee.User, DisplayName: d.Callee.DisplayName})},
	}
	var ss []*verbatimv1.Stream
	add := func(sender string, receiverMedia, senderMedia []sipdialog.Media) {
		for i, m := range receiverMedia {
			if m.Kind != "audio" || !m.Addr.IsValid() || m.Addr.Port() == 0 {
				continue
			}
			id := streamID(sender, i)
			// SRTP is decrypted with the key the sender's SDP gives for
			// this m-line (RFC 4568: each side announces its own).
			var dec *srtpdec.Decryptor
			var decKey [sha256.Size]byte
			if strings.Contains(m.Transport, "SAVP") && i < len(senderMedia) {
				dec, decKey = in.sdesDecryptor(c, id, senderMedia[i].Crypto, m.Crypto)
			}
			st := &verbatimv1.Stream{StreamId: id, ParticipantId: sender, Media: "audio", Transport: m.Transport,
				Decodable: m.Transport == "RTP/AVP" || dec != nil, Label: m.Label}
			// A payload type means what the sender's own SDP says it
			// means (it sends what it offered: SIPp's uac_pcap offers 8
			// 101 and sends PCMA to an answer of 0 alone), then what the
			// receiver's says; the processor falls back on the static
			// assignments of RFC 3551.
			var own []sipdialog.Codec
			if i < len(senderMedia) && senderMedia[i].Kind == "audio" {
				own = senderMedia[i].Codecs
			}
			st.Codecs = codecs(own, m.Codecs)
			ss = append(ss, st)
			if _, ok := c.streams[m.Addr]; !ok {
				// A re-INVITE may move a stream to a new address: it is
				// still the same stream, whose batches keep counting.
				var st *stream
				for _, o := range c.streams {
					if o.id == id {
						st = o
					}
				}
				if st == nil {
					st = &stream{id: id, call: c, batcher: rtpbatch.New(rtpbatch.Config{CallID: c.id, StreamID: id, Shared: &in.scratch}, c.sealer),
						sent: verbatimv1.StreamMedia{StreamId: id}}
				}
				c.streams[m.Addr] = st
				if prev, taken := in.byAddr[m.Addr]; taken && prev.call != c && !prev.call.ended {
					// Two calls' media to one address (a media server
					// answering every call from one port): from now on
					// packets to it are matched by both ends.
					prev.sharedDst, st.sharedDst = true, true
				}
				in.byAddr[m.Addr] = st
			}
			if i < len(senderMedia) && senderMedia[i].Addr.IsValid() && senderMedia[i].Addr.Port() != 0 {
				st := c.streams[m.Addr]
				k := flowKey{senderMedia[i].Addr, m.Addr}
				// A later call never takes over a flow an earlier call
				// still has on both ends.
				if cur, taken := in.byFlow[k]; !taken || cur.call.ended || cur.call == c {
					in.byFlow[k] = st
					if !slices.Contains(st.flows, k) {
						st.flows = append(st.flows, k)
					}
				}
			}
			// New keys (an answer choosing another tag, a re-INVITE or
			// UPDATE) replace the old ones; the old stay for the packets
			// sent before the new apply.
			if st := c.streams[m.Addr]; dec != nil && (st.srtp == nil || st.srtpKey != decKey) {
				st.srtpPrev, st.srtp, st.srtpKey = st.srtp, dec, decKey
			}
		}
	}
	add("caller", d.Callee.Media, d.Caller.Media)
	add("callee", d.Caller.Media, d.Callee.Media)
	c.remember(ss)
	return ps, ss
}

// codecs are a stream's payload types: the first list's meaning of a
// payload type wins, each once.
func codecs(lists ...[]sipdialog.Codec) []*verbatimv1.Codec {
	var out []*verbatimv1.Codec
	for _, k := range slices.Concat(lists...) {
		if slices.ContainsFunc(out, func(c *verbatimv1.Codec) bool { return c.GetPayloadType() == uint32(k.PayloadType) }) {
			continue
		}
		out = append(out, &verbatimv1.Codec{PayloadType: uint32(k.PayloadType), Name: k.Name,
			ClockRate: k.ClockRate, Channels: k.Channels, Fmtp: k.Fmtp})
	}
	return out
}

// remember keeps the streams as last negotiated for MediaEnded, which
// describes every stream the call ever had: a re-INVITE may move a
// stream, but its earlier batches still need decoding.
func (c *call) remember(ss []*verbatimv1.Stream) {
	for _, st := range ss {
		if i := slices.IndexFunc(c.desc, func(o *verbatimv1.Stream) bool { return o.GetStreamId() == st.GetStreamId() }); i >= 0 {
			// A re-INVITE may change codec: packets sent before it still
			// need the old one, so codecs no longer offered are kept.
			for _, old := range c.desc[i].GetCodecs() {
				if !slices.ContainsFunc(st.Codecs, func(n *verbatimv1.Codec) bool { return n.GetPayloadType() == old.GetPayloadType() }) {
					st.Codecs = append(st.Codecs, old)
				}
			}
			c.desc[i] = st
		} else {
			c.desc = append(c.desc, st)
		}
	}
}

func (in *pcapIngest) updated(e sipdialog.Event) {
	c, ok := in.calls[e.Call.CallID]
	if !ok {
		return
	}
	ev := &verbatimv1.CallUpdated{CallId: c.id, UpdatedAt: timestamppb.New(e.At), Reason: "answered"}
	if e.Kind == sipdialog.EventUpdated {
		ev.Reason = "media"
	}
	ev.Participants, ev.Streams = in.parties(c)
	in.produce(schemas.TopicCalls, c.id, c, "updated-"+ev.Reason, e.At, ev)
}

func (in *pcapIngest) batch(s *stream, pb *verbatimv1.PacketBatch) {
	c := s.call
	in.report.Batches++
	if s.sent.Batches == 0 {
		s.sent.FirstArrivalUnixNano = pb.GetFirstArrivalUnixNano()
	}
	s.sent.Batches++
	s.sent.Packets += uint64(pb.GetPacketCount())
	in.produce(schemas.TopicMedia, c.id, c, fmt.Sprintf("batch-%s-%d", pb.GetStreamId(), pb.GetBatchIndex()),
		time.Unix(0, pb.GetFirstArrivalUnixNano()), pb)
}

func (in *pcapIngest) ended(e sipdialog.Event) {
	c, ok := in.calls[e.Call.CallID]
	if !ok {
		return
	}
	d := e.Call
	reason := map[sipdialog.EndReason]verbatimv1.EndReason{
		sipdialog.EndBye: verbatimv1.EndReason_END_REASON_BYE, sipdialog.EndCancel: verbatimv1.EndReason_END_REASON_CANCEL,
		sipdialog.EndRejected: verbatimv1.EndReason_END_REASON_REJECTED, sipdialog.EndTimeout: verbatimv1.EndReason_END_REASON_TIMEOUT,
		sipdialog.EndCaptureEnded: verbatimv1.EndReason_END_REASON_CAPTURE_ENDED,
	}[d.EndReason]
	in.endCall(c, e.At, reason, d.InvitedAt, d.EndedAt, d.Duration(), uint32(d.FinalStatus))
}

// digit announces a DTMF digit sent in SIP INFO as metadata, sealed.
func (in *pcapIngest) digit(e sipdialog.Event) {
	c, ok := in.calls[e.Call.CallID]
	if !ok {
		return
	}
	d := &verbatimv1.EnteredDigits{Digits: string(e.Digit), At: timestamppb.New(e.At), Method: "sip-info"}
	if in.cfg.PCI {
		d.Digits, d.Masked = "*", true
	}
	in.report.Digits++
	in.produce(schemas.TopicMetadata, c.id, c, fmt.Sprintf("digit-%d", in.report.Digits), e.At, &verbatimv1.MetadataAttached{
		CallId: c.id, OccurredAt: timestamppb.New(e.At), Source: "verbatim-ingest:sip-info",
		Personal: in.sealMsg(c, &verbatimv1.MetadataPersonal{Digits: []*verbatimv1.EnteredDigits{d}}),
	})
}

// endCall flushes the call's streams and produces MediaEnded (after its
// last batches, on the media partition) and CallEnded.
func (in *pcapIngest) endCall(c *call, at time.Time, reason verbatimv1.EndReason, startedAt, endedAt time.Time, dur time.Duration, sipStatus uint32) {
	// Final batches in a fixed order, then MediaEnded after them on the
	// same partition: a processor that reads it has the whole call.
	addrs := slices.SortedFunc(maps.Keys(c.streams), func(a, b netip.AddrPort) int {
		return cmp.Or(strings.Compare(c.streams[a].id, c.streams[b].id), a.Compare(b))
	})
	media := make([]*verbatimv1.StreamMedia, 0, len(addrs))
	for _, addr := range addrs {
		s := c.streams[addr]
		if in.byAddr[addr] == s { // a later call may reuse the address
			delete(in.byAddr, addr)
		}
		for _, k := range s.flows {
			if in.byFlow[k] == s {
				delete(in.byFlow, k)
			}
		}
		if slices.Contains(media, &s.sent) {
			continue // the stream moved: flushed at its first address
		}
		if s.cand.held { // a source that never sent a second packet
			s.cand.held = false
			s.sent.StrayPackets++
			in.report.StrayPackets++
		}
		pb, err := s.batcher.Flush()
		if err != nil {
			in.err = err
			return
		}
		if pb != nil {
			in.batch(s, pb)
		}
		media = append(media, &s.sent)
	}
	c.ended = true
	for k, s := range in.rtpOnly.flows { // NAT'd flows attached to the call
		if s.call == c {
			delete(in.rtpOnly.flows, k)
		}
	}
	if len(c.quality) > 0 {
		in.produce(schemas.TopicMetadata, c.id, c, "rtcp-quality", at, &verbatimv1.MetadataAttached{
			CallId: c.id, OccurredAt: timestamppb.New(at), Source: "verbatim-ingest:rtcp", Scores: qualityScores(c.quality)})
	}
	for _, st := range c.streams {
		if st.zrtp {
			for _, d := range c.desc {
				if d.GetStreamId() == st.id {
					d.Transport, d.Decodable = "ZRTP/SAVP", false
				}
			}
		}
	}
	in.produce(schemas.TopicMedia, c.id, c, "media-ended", at, &verbatimv1.MediaEnded{
		CallId: c.id, StartedAt: timestamppb.New(startedAt), EndedAt: timestamppb.New(endedAt), Reason: reason,
		Streams: c.desc, Media: media, CaptureDamaged: c.damaged,
	})
	in.produce(schemas.TopicCalls, c.id, c, "ended", at, &verbatimv1.CallEnded{
		CallId: c.id, EndedAt: timestamppb.New(endedAt), Reason: reason,
		Duration: durationpb.New(dur), SipStatus: sipStatus,
	})
}
