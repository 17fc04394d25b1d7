// Package sipdialog follows SIP INVITE dialogs seen passively on the wire:
// who called whom, when the call was offered, answered and ended, and where
// each side wants its RTP (from the SDP). It parses messages with sipgo and
// SDP with pion/sdp. A malformed message is counted and reported; it never
// stops the tracking of other calls.
package sipdialog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// State of a call.
type State int

// States, in the order a call moves through them.
const (
	StateOffered State = iota + 1
	StateEstablished
	StateEnded
)

// EndReason says how a call ended.
type EndReason int

// End reasons.
const (
	EndBye EndReason = iota + 1
	EndCancel
	EndRejected
	EndTimeout
	EndCaptureEnded
)

func (r EndReason) String() string {
	switch r {
	case EndBye:
		return "bye"
	case EndCancel:
		return "cancel"
	case EndRejected:
		return "rejected"
	case EndTimeout:
		return "timeout"
	case EndCaptureEnded:
		return "capture-ended"
	}
	return "unknown"
}

// Party is one side of a call.
type Party struct {
	URI         string
	User        string
	DisplayName string
	Tag         string
	// Media is where this party receives RTP, from its latest SDP.
	Media []Media
	// Signalling is the address its messages came from.
	Signalling netip.AddrPort
}

// Call is a tracked INVITE dialog.
type Call struct {
	CallID         string
	Caller, Callee Party
	State          State
	InvitedAt      time.Time
	AnsweredAt     time.Time
	EndedAt        time.Time
	LastActivity   time.Time
	EndReason      EndReason
	// FinalStatus is the final response code for rejected calls.
	FinalStatus int
	// Replaces is the Call-ID of the dialog this call replaces (RFC 3891:
	// an attended transfer or a call pickup), from its INVITE.
	Replaces string
	// SessionID is the INVITE's Session-ID header (RFC 7989), if any.
	SessionID string
	// ReferredBy is set when the INVITE says a REFER caused it (RFC 3892
	// Referred-By): a blind transfer.
	ReferredBy string
	// ReferTo is the target of the last REFER sent within this call (RFC
	// 3515), without parameters: the call a transfer should create.
	ReferTo    string
	inviteCSeq uint32
	canceled   bool
}

// Duration is from answer to end (zero if never answered).
func (c *Call) Duration() time.Duration {
	if c.AnsweredAt.IsZero() || c.EndedAt.IsZero() {
		return 0
	}
	return c.EndedAt.Sub(c.AnsweredAt)
}

// EventKind says what changed.
type EventKind int

// Event kinds.
const (
	EventStarted  EventKind = iota + 1 // first INVITE
	EventAnswered                      // 2xx to the initial INVITE
	EventUpdated                       // media changed (early media, re-INVITE)
	EventEnded
	EventDigit // a DTMF digit sent in SIP INFO (Event.Digit)
)

// Event reports a change to a call. Call points at the tracker's record,
// valid until the next call into the Tracker.
type Event struct {
	Kind EventKind
	At   time.Time
	Call *Call
	// Digit is the key of an EventDigit: 0-9, *, #, A-D.
	Digit byte
}

// Stats counts messages.
type Stats struct {
	Messages  uint64
	Malformed uint64
	Ignored   uint64 // REGISTER, OPTIONS and others outside INVITE dialogs
	// KeepAlives counts CRLF keep-alives (RFC 5626), which are not messages.
	KeepAlives uint64
}

// ErrMalformed wraps every parse failure Handle reports.
var ErrMalformed = errors.New("sipdialog: malformed SIP message")

// Tracker follows dialogs. Not safe for concurrent use: give each capture
// one Tracker.
type Tracker struct {
	calls map[string]*Call
	emit  func(Event)
	stats Stats
}

// NewTracker returns a Tracker that reports changes to emit.
func NewTracker(emit func(Event)) *Tracker {
	return &Tracker{calls: map[string]*Call{}, emit: emit}
}

// Stats returns the counters so far.
func (t *Tracker) Stats() Stats { return t.stats }

// Call returns a tracked call by SIP Call-ID.
func (t *Tracker) Call(callID string) (*Call, bool) {
	c, ok := t.calls[callID]
	return c, ok
}

// Forget drops the calls that ended before the given time and returns how
// many it dropped. A long capture or a live interface calls it
// periodically, so memory holds open calls only. Keep ended calls for a
// while first (64 s, twice SIP's transaction timeout, is plenty): until
// then their retransmissions are recognised instead of starting new calls.
func (t *Tracker) Forget(before time.Time) int {
	n := 0
	for id, c := range t.calls {
		if c.State == StateEnded && c.EndedAt.Before(before) {
			delete(t.calls, id)
			n++
		}
	}
	return n
}

// EachOpen calls fn for every call not yet ended, without allocating.
func (t *Tracker) EachOpen(fn func(*Call)) {
	for _, c := range t.calls {
		if c.State != StateEnded {
			fn(c)
		}
	}
}

// Calls returns every tracked call, in no particular order.
func (t *Tracker) Calls() []*Call {
	out := make([]*Call, 0, len(t.calls))
	for _, c := range t.calls {
		out = append(out, c)
	}
	return out
}

// Handle processes one SIP message seen at time at from src.
func (t *Tracker) Handle(at time.Time, src netip.AddrPort, payload []byte) error {
	if len(bytes.TrimSpace(payload)) == 0 { // RFC 5626 CRLF keep-alive
		t.stats.KeepAlives++
		return nil
	}
	t.stats.Messages++
	msg, err := sip.ParseMessage(payload)
	if err != nil {
		t.stats.Malformed++
		return fmt.Errorf("%w from %v: %w", ErrMalformed, src, err)
	}
	cid := msg.CallID()
	cseq := msg.CSeq()
	if cid == nil || cseq == nil || msg.From() == nil || msg.To() == nil {
		t.stats.Malformed++
		return fmt.Errorf("%w from %v: missing Call-ID, CSeq, From or To", ErrMalformed, src)
	}
	if err := validate(msg, cseq, payload); err != nil {
		t.stats.Malformed++
		return fmt.Errorf("%w from %v: %w", ErrMalformed, src, err)
	}
	switch m := msg.(type) {
	case *sip.Request:
		return t.request(at, src, m, cid.Value(), cseq)
	case *sip.Response:
		return t.response(at, src, m, cid.Value(), cseq)
	}
	return nil
}

func (t *Tracker) request(at time.Time, src netip.AddrPort, r *sip.Request, callID string, cseq *sip.CSeqHeader) error {
	c, known := t.calls[callID]
	if !known {
		if r.Method != sip.INVITE {
			t.stats.Ignored++
			return nil
		}
		c = &Call{CallID: callID, State: StateOffered, InvitedAt: at, inviteCSeq: cseq.SeqNo}
		c.Caller = party(r.From().DisplayName, &r.From().Address, r.From().Params)
		c.Callee = party(r.To().DisplayName, &r.To().Address, r.To().Params)
		c.Caller.Signalling = src
		c.Replaces, c.ReferredBy = replaces(r), headerValue(r, "Referred-By", "b")
		c.SessionID = headerValue(r, "Session-ID", "")
		t.calls[callID] = c
		media, err := bodyMedia(r)
		c.Caller.Media = media
		c.LastActivity = at
		t.emit(Event{Kind: EventStarted, At: at, Call: c})
		return err
	}
	c.LastActivity = at
	if c.State == StateEnded {
		return nil
	}
	switch r.Method {
	case sip.INVITE:
		if cseq.SeqNo <= c.inviteCSeq {
			return nil // a retransmission, or the INVITE seen again on another hop
		}
		c.inviteCSeq = cseq.SeqNo
		media, err := bodyMedia(r)
		if len(media) > 0 {
			*t.side(c, r.From().Params) = withMedia(*t.side(c, r.From().Params), media)
			t.emit(Event{Kind: EventUpdated, At: at, Call: c})
		}
		return err
	case sip.ACK:
		// With a late offer (INVITE without SDP, offer in the 2xx) the
		// ACK carries the caller's answer.
		media, err := bodyMedia(r)
		if len(media) > 0 {
			side := t.side(c, r.From().Params)
			*side = withMedia(*side, media)
			t.emit(Event{Kind: EventUpdated, At: at, Call: c})
		}
		return err
	case sip.REFER:
		if to := headerValue(r, "Refer-To", "r"); to != "" {
			c.ReferTo = to
		}
	case sip.INFO:
		if d, ok := infoDigit(r); ok {
			t.emit(Event{Kind: EventDigit, At: at, Call: c, Digit: d})
		}
	case sip.CANCEL:
		c.canceled = true
	case sip.BYE:
		t.end(c, at, EndBye, 0)
	}
	return nil
}

func (t *Tracker) response(at time.Time, src netip.AddrPort, r *sip.Response, callID string, cseq *sip.CSeqHeader) error {
	c, ok := t.calls[callID]
	if !ok {
		t.stats.Ignored++
		return nil
	}
	c.LastActivity = at
	if cseq.MethodName != sip.INVITE || c.State == StateEnded {
		return nil
	}
	media, err := bodyMedia(r)
	code := int(r.StatusCode)
	switch {
	case code < 200:
		if len(media) > 0 && c.State == StateOffered { // early media (183)
			c.Callee.Media = media
			t.emit(Event{Kind: EventUpdated, At: at, Call: c})
		}
	case code < 300:
		if c.State == StateOffered {
			c.State = StateEstablished
			c.AnsweredAt = at
			if tag, ok := r.To().Params.Get("tag"); ok {
				c.Callee.Tag = tag
			}
			c.Callee.Signalling = src
			if len(media) > 0 {
				c.Callee.Media = media
			}
			t.emit(Event{Kind: EventAnswered, At: at, Call: c})
		} else if len(media) > 0 && cseq.SeqNo == c.inviteCSeq { // answer to a re-INVITE
			responder := t.other(c, r.From().Params)
			*responder = withMedia(*responder, media)
			t.emit(Event{Kind: EventUpdated, At: at, Call: c})
		}
	case code == 401 || code == 407:
		// An authentication challenge: the caller sends the INVITE again
		// with credentials (a higher CSeq) in the same call.
	default:
		if c.State == StateOffered {
			reason := EndRejected
			if c.canceled && code == 487 {
				reason = EndCancel
			}
			t.end(c, at, reason, code)
		}
	}
	return err
}

// End ends an open call from outside signalling: media inactivity, or the
// end of the capture. It does nothing to a call already ended.
func (t *Tracker) End(c *Call, at time.Time, reason EndReason) {
	t.end(c, at, reason, 0)
}

func (t *Tracker) end(c *Call, at time.Time, reason EndReason, status int) {
	if c.State == StateEnded {
		return
	}
	c.State = StateEnded
	c.EndedAt = at
	c.EndReason = reason
	c.FinalStatus = status
	t.emit(Event{Kind: EventEnded, At: at, Call: c})
}

// side returns the party whose From tag is given (the sender of a request).
func (t *Tracker) side(c *Call, from sip.HeaderParams) *Party {
	if tag, _ := from.Get("tag"); tag != "" && tag == c.Callee.Tag {
		return &c.Callee
	}
	return &c.Caller
}

// other returns the party that is not the request's sender.
func (t *Tracker) other(c *Call, from sip.HeaderParams) *Party {
	if t.side(c, from) == &c.Caller {
		return &c.Callee
	}
	return &c.Caller
}

func withMedia(p Party, m []Media) Party {
	p.Media = m
	return p
}

func party(display string, u *sip.Uri, params sip.HeaderParams) Party {
	p := Party{URI: u.String(), User: u.User, DisplayName: display}
	p.Tag, _ = params.Get("tag")
	return p
}

// bodyMedia returns the media of the message's SDP: the body when it is
// application/sdp, or its application/sdp part when it is multipart (as
// SIPREC's are). Other bodies have no media.
func bodyMedia(msg sip.Message) ([]Media, error) {
	body := msg.Body()
	if len(body) == 0 {
		return nil, nil
	}
	ct := "application/sdp" // RFC 3261 §20.15: a body without Content-Type is taken as SDP here
	if hs := msg.GetHeaders("Content-Type"); len(hs) > 0 {
		ct = hs[0].Value()
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("%w: Content-Type %q: %w", ErrMalformed, ct, err)
	}
	switch {
	case mt == "application/sdp":
	case strings.HasPrefix(mt, "multipart/"):
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		body = nil
		for {
			part, err := mr.NextRawPart()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%w: multipart body: %w", ErrMalformed, err)
			}
			if pt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); pt == "application/sdp" {
				if body, err = io.ReadAll(io.LimitReader(part, 1<<20)); err != nil {
					return nil, fmt.Errorf("%w: multipart body: %w", ErrMalformed, err)
				}
				break
			}
		}
		if body == nil {
			return nil, nil
		}
	default:
		return nil, nil
	}
	m, err := ParseSDP(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

// validate applies the RFC 3261 rules whose breach RFC 4475 §3.1.2 lists
// as invalid and that the parser lets through: an element must not act on
// such a message, so neither does the tracker.
func validate(msg sip.Message, cseq *sip.CSeqHeader, raw []byte) error {
	switch m := msg.(type) {
	case *sip.Request:
		if m.SipVersion != "SIP/2.0" {
			return fmt.Errorf("unsupported protocol version %q (RFC 4475 §3.1.2.16)", m.SipVersion)
		}
		if !strings.EqualFold(string(cseq.MethodName), string(m.Method)) {
			return fmt.Errorf("CSeq method %s does not match request method %s (RFC 4475 §3.1.2.17)", cseq.MethodName, m.Method)
		}
		if m.Recipient.Headers != nil && m.Recipient.Headers.Length() > 0 {
			return errors.New("headers in the Request-URI (RFC 4475 §3.1.2.11)")
		}
	case *sip.Response:
		if m.SipVersion != "SIP/2.0" {
			return fmt.Errorf("unsupported protocol version %q (RFC 4475 §3.1.2.16)", m.SipVersion)
		}
	}
	// A URI with headers or parameters in From, To or Contact must be in
	// name-addr form (<...>), or its parts are ambiguous (RFC 4475
	// §3.1.2.13).
	hdrs, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	for _, line := range bytes.Split(hdrs, []byte("\r\n"))[1:] {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch strings.ToLower(string(bytes.TrimSpace(name))) {
		case "from", "f", "to", "t", "contact", "m":
			if v := bytes.TrimSpace(val); !bytes.Contains(v, []byte("<")) && bytes.Contains(v, []byte("?")) {
				return fmt.Errorf("%s: a URI with headers must be enclosed in <> (RFC 4475 §3.1.2.13)", bytes.TrimSpace(name))
			}
		}
	}
	return nil
}

// infoDigit reads the DTMF digit of a SIP INFO: application/dtmf-relay
// ("Signal=5") or application/dtmf ("5").
func infoDigit(r *sip.Request) (byte, bool) {
	ct := ""
	if hs := r.GetHeaders("Content-Type"); len(hs) > 0 {
		ct, _, _ = mime.ParseMediaType(hs[0].Value())
	}
	body := strings.TrimSpace(string(r.Body()))
	var v string
	switch ct {
	case "application/dtmf-relay":
		for _, line := range strings.Split(body, "\n") {
			name, val, ok := strings.Cut(strings.TrimSpace(line), "=")
			if ok && strings.EqualFold(strings.TrimSpace(name), "Signal") {
				v = strings.TrimSpace(val)
			}
		}
	case "application/dtmf":
		v = body
	default:
		return 0, false
	}
	switch {
	case len(v) == 1 && strings.ContainsAny(v, "0123456789*#ABCDabcd"):
		return strings.ToUpper(v)[0], true
	case v == "10":
		return '*', true
	case v == "11":
		return '#', true
	}
	return 0, false
}

// headerValue returns the first value of header name (or its compact
// form), or "".
func headerValue(r *sip.Request, name, compact string) string {
	for _, n := range []string{name, compact} {
		if hs := r.GetHeaders(n); len(hs) > 0 {
			return strings.TrimSpace(hs[0].Value())
		}
	}
	return ""
}

// replaces returns the Call-ID a Replaces header (RFC 3891) names, or "".
func replaces(r *sip.Request) string {
	v := headerValue(r, "Replaces", "")
	id, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(id)
}
