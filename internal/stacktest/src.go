package stacktest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
)

// SRC is a SIPREC Session Recording Client for tests, on sipgo: what an SBC
// forking calls to Verbatim's SRS does, over UDP, TCP or TLS.
type SRC struct {
	t      testing.TB
	ua     *sipgo.UserAgent
	cl     *sipgo.Client
	target sip.Uri
	dua    sipgo.DialogUA
	// Byes receives the Call-ID of every session the SRS ended (its BYE,
	// answered 200).
	Byes chan string
}

// NewSRC returns an SRC sending to srs ("udp:127.0.0.1:5060", "tcp:...",
// "tls:..."); conf is its TLS client configuration (roots, and a client
// certificate for mutual TLS).
func NewSRC(t testing.TB, srs string, conf *tls.Config) *SRC {
	t.Helper()
	network, hostport, ok := strings.Cut(srs, ":")
	ap, err := netip.ParseAddrPort(hostport)
	if !ok || err != nil {
		t.Fatalf("SRC target %q: want udp:HOST:PORT", srs)
	}
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgent("Verbatim test SRC")}
	if conf != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(conf))
	}
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	target := sip.Uri{Scheme: "sip", User: "srs", Host: ap.Addr().String(), Port: int(ap.Port()), UriParams: sip.NewParams()}
	if network != "udp" {
		target.UriParams.Add("transport", network)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "src", Host: "127.0.0.1"}, Params: sip.NewParams()}
	contact.Params.Add("+sip.src", "")
	c := &SRC{t: t, ua: ua, cl: cl, target: target, dua: sipgo.DialogUA{Client: cl, ContactHDR: contact}, Byes: make(chan string, 100)}
	// The SRS's requests in a session (its BYE) come on the connection the
	// SRC opened.
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		select {
		case c.Byes <- req.CallID().Value():
		default:
		}
	})
	return c
}

// Plain returns an SRC that does not say it is one: no +sip.src in its
// Contact (a plain call's INVITE).
func (c *SRC) Plain() *SRC {
	p := *c
	p.dua.ContactHDR = sip.ContactHeader{Address: c.dua.ContactHDR.Address}
	return &p
}

// SRCSession is one recording session the SRS answered.
type SRCSession struct {
	D      *sipgo.DialogClientSession
	Answer *sdp.SessionDescription
}

// Ports returns the SRS's media address of each answered m-line (invalid:
// refused, port 0).
func (s *SRCSession) Ports() []netip.AddrPort {
	var out []netip.AddrPort
	addr := netip.Addr{}
	if s.Answer.ConnectionInformation != nil && s.Answer.ConnectionInformation.Address != nil {
		addr, _ = netip.ParseAddr(s.Answer.ConnectionInformation.Address.Address)
	}
	for _, m := range s.Answer.MediaDescriptions {
		a := addr
		if m.ConnectionInformation != nil && m.ConnectionInformation.Address != nil {
			a, _ = netip.ParseAddr(m.ConnectionInformation.Address.Address)
		}
		if m.MediaName.Port.Value == 0 {
			out = append(out, netip.AddrPort{})
			continue
		}
		out = append(out, netip.AddrPortFrom(a, uint16(m.MediaName.Port.Value)))
	}
	return out
}

// Invite opens a recording session with body (SDP, or SDP and metadata in
// multipart/mixed) and the extra headers. It returns the session when the
// SRS answered 2xx (the ACK sent), or the SRS's final response otherwise.
func (c *SRC) Invite(ctx context.Context, contentType string, body []byte, hdrs ...sip.Header) (*SRCSession, *sip.Response, error) {
	return c.InviteAs(ctx, "", "", contentType, body, hdrs...)
}

// InviteAs is Invite answering a digest challenge as user with password.
func (c *SRC) InviteAs(ctx context.Context, user, password, contentType string, body []byte, hdrs ...sip.Header) (*SRCSession, *sip.Response, error) {
	hdrs = append(hdrs, sip.NewHeader("Content-Type", contentType))
	d, err := c.dua.Invite(ctx, c.target, body, hdrs...)
	if err != nil {
		return nil, nil, err
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: user, Password: password}); err != nil {
		var re *sipgo.ErrDialogResponse
		if errors.As(err, &re) {
			_ = d.Close()
			return nil, re.Res, nil
		}
		return nil, nil, err
	}
	if err := d.Ack(ctx); err != nil {
		return nil, nil, err
	}
	s := &SRCSession{D: d, Answer: &sdp.SessionDescription{}}
	if err := s.Answer.Unmarshal(d.InviteResponse.Body()); err != nil {
		return nil, nil, fmt.Errorf("SRS answer: %w\n%s", err, d.InviteResponse.Body())
	}
	return s, d.InviteResponse, nil
}

// Reinvite sends an in-dialog INVITE with a new body and returns the
// final response (ACKed when 2xx).
func (s *SRCSession) Reinvite(ctx context.Context, contentType string, body []byte) (*sip.Response, error) {
	target := s.D.InviteRequest.Recipient
	if c := s.D.InviteResponse.Contact(); c != nil {
		target = c.Address
	}
	req := sip.NewRequest(sip.INVITE, target)
	req.AppendHeader(sip.NewHeader("Content-Type", contentType))
	req.SetBody(body)
	res, err := s.D.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if res.IsSuccess() {
		ack := sip.NewRequest(sip.ACK, target)
		if err := s.D.WriteRequest(ack); err != nil {
			return res, err
		}
		if err := s.Answer.Unmarshal(res.Body()); err != nil {
			return res, fmt.Errorf("SRS answer: %w", err)
		}
	}
	return res, nil
}

// Update sends an in-dialog UPDATE with body (none if empty) and returns
// the final response.
func (s *SRCSession) Update(ctx context.Context, contentType string, body []byte) (*sip.Response, error) {
	target := s.D.InviteRequest.Recipient
	if c := s.D.InviteResponse.Contact(); c != nil {
		target = c.Address
	}
	req := sip.NewRequest(sip.UPDATE, target)
	if len(body) > 0 {
		req.AppendHeader(sip.NewHeader("Content-Type", contentType))
		req.SetBody(body)
	}
	return s.D.Do(ctx, req)
}

// SIPRECBody is the multipart/mixed body of a SIPREC offer (RFC 7866 9):
// its content type and bytes.
func SIPRECBody(sdpOffer, metadata string) (string, []byte) {
	const b = "verbatim-test-boundary"
	body := "--" + b + "\r\nContent-Type: application/sdp\r\n\r\n" + sdpOffer + "\r\n--" + b +
		"\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n" + metadata + "\r\n--" + b + "--\r\n"
	return "multipart/mixed;boundary=" + b, []byte(body)
}

// MediaSocket is a UDP socket on 127.0.0.1 an SRC sends a stream from.
func MediaSocket(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
