package siprec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// Bounds on an INVITE body.
const (
	// MaxBodyBytes bounds a whole multipart body.
	MaxBodyBytes = 256 << 10
	// MaxParts bounds its parts.
	MaxParts = 8
)

// ErrNotSIPREC is returned for a body that holds no recording metadata:
// an INVITE that is not a SIPREC offer.
var ErrNotSIPREC = errors.New("siprec: no application/rs-metadata+xml part: not a SIPREC offer")

// Body is the SDP and the metadata of a SIPREC INVITE, re-INVITE or UPDATE.
type Body struct {
	SDP      []byte
	Metadata []byte
	// Others are the parts that are neither (a Cisco application/gtd
	// part, say), by content type: kept, not interpreted.
	Others map[string][]byte
}

// SplitBody splits a multipart/mixed body (RFC 7866 section 9) into its SDP
// and its metadata. contentType is the message's Content-Type; when it is
// empty, the boundary is taken from the body's first delimiter line. It
// refuses a body over MaxBodyBytes, more than MaxParts parts, a part of a
// multipart type other than mixed, and two SDP or two metadata parts.
func SplitBody(contentType string, body []byte) (Body, error) {
	if len(body) > MaxBodyBytes {
		return Body{}, fmt.Errorf("siprec: body of %d bytes, more than %d", len(body), MaxBodyBytes)
	}
	boundary := ""
	if contentType != "" {
		mt, params, err := mime.ParseMediaType(contentType)
		if err != nil {
			return Body{}, fmt.Errorf("siprec: Content-Type %q: %w", contentType, err)
		}
		if mt == "application/sdp" {
			return Body{}, ErrNotSIPREC
		}
		if mt != "multipart/mixed" {
			return Body{}, fmt.Errorf("siprec: Content-Type %s: a SIPREC offer is multipart/mixed", mt)
		}
		boundary = params["boundary"]
	} else {
		trimmed := bytes.TrimLeft(body, " \t\r\n")
		if line, _, _ := bytes.Cut(trimmed, []byte("\n")); bytes.HasPrefix(line, []byte("--")) {
			boundary = strings.TrimSpace(string(line[2:]))
		}
	}
	if boundary == "" {
		return Body{}, errors.New("siprec: multipart body without a boundary")
	}
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	var b Body
	for n := 0; ; n++ {
		p, err := r.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Body{}, fmt.Errorf("siprec: multipart body: %w", err)
		}
		if n >= MaxParts {
			return Body{}, fmt.Errorf("siprec: more than %d parts", MaxParts)
		}
		data, err := io.ReadAll(io.LimitReader(p, MaxBodyBytes))
		last := false
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			// The body ends without its closing delimiter (seen from real
			// SRCs): the part runs to the end of the body.
			last = true
		case err != nil:
			return Body{}, fmt.Errorf("siprec: part %d: %w", n+1, err)
		}
		ct := partType(p.Header)
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Disposition"))), "recording-session") {
			ct = "application/rs-metadata+xml" // RFC 7866 9.1: the disposition names the metadata part
		}
		switch ct {
		case "application/sdp":
			if b.SDP != nil {
				return Body{}, errors.New("siprec: two SDP parts")
			}
			b.SDP = data
		case "application/rs-metadata+xml", "application/rs-metadata":
			if b.Metadata != nil {
				return Body{}, errors.New("siprec: two metadata parts")
			}
			b.Metadata = data
		default:
			if b.Others == nil {
				b.Others = map[string][]byte{}
			}
			b.Others[ct] = data
		}
		if last {
			break
		}
	}
	if b.Metadata == nil {
		return b, ErrNotSIPREC
	}
	if b.SDP == nil {
		return b, errors.New("siprec: no application/sdp part")
	}
	return b, nil
}

func partType(h textproto.MIMEHeader) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return strings.ToLower(strings.TrimSpace(h.Get("Content-Type")))
	}
	return mt
}
