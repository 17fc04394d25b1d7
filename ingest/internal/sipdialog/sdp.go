package sipdialog

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// Codec is one payload type a media line offers.
type Codec struct {
	PayloadType uint8
	Name        string
	ClockRate   uint32
	Channels    uint32
	Fmtp        string
}

// Media is one m= line of an SDP body: where its sender wants to receive
// RTP and in which formats.
type Media struct {
	Kind      string // "audio", "video"
	Addr      netip.AddrPort
	Transport string // "RTP/AVP", "RTP/SAVP", ...
	Codecs    []Codec
	Direction string // sendrecv (default), sendonly, recvonly, inactive
	Label     string // a=label (SIPREC)
	// Crypto are the SDES keys (RFC 4568 a=crypto) with which the party
	// that wrote this SDP encrypts what it sends, in preference order.
	Crypto []Crypto
}

// Crypto is one RFC 4568 crypto attribute with an inline master key.
type Crypto struct {
	Tag   int
	Suite string // e.g. AES_CM_128_HMAC_SHA1_80
	// Key is the master key followed by the master salt (decoded).
	Key []byte
	// MKI is the Master Key Identifier length in bytes (0: none).
	MKILen int
}

// String never shows the key.
func (c Crypto) String() string {
	return fmt.Sprintf("crypto %d %s (key %d bytes)", c.Tag, c.Suite, len(c.Key))
}

// ParseCrypto parses an a=crypto value: "1 AES_CM_128_HMAC_SHA1_80
// inline:BASE64[|lifetime][|MKI:length] [session params]". Only the first
// inline key is used.
func ParseCrypto(v string) (Crypto, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return Crypto{}, fmt.Errorf("sdp: crypto %q: want tag, suite and key params", v)
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil {
		return Crypto{}, fmt.Errorf("sdp: crypto tag %q: %w", f[0], err)
	}
	keyParam, _, _ := strings.Cut(f[2], ";") // several keys: the first
	inline, ok := strings.CutPrefix(keyParam, "inline:")
	if !ok {
		return Crypto{}, fmt.Errorf("sdp: crypto %d: key method is not inline", tag)
	}
	parts := strings.Split(inline, "|")
	key, err := base64.StdEncoding.DecodeString(parts[0])
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(parts[0]); err != nil {
			return Crypto{}, fmt.Errorf("sdp: crypto %d: key is not base64", tag)
		}
	}
	c := Crypto{Tag: tag, Suite: f[1], Key: key}
	for _, p := range parts[1:] {
		if _, l, ok := strings.Cut(p, ":"); ok { // MKI:length
			if n, err := strconv.Atoi(l); err == nil {
				c.MKILen = n
			}
		}
	}
	return c, nil
}

// StaticCodec returns the codec an RFC 3551 static payload type names.
func StaticCodec(pt uint8) (Codec, bool) {
	c, ok := staticPT[pt]
	return c, ok
}

// staticPT are the RFC 3551 static payload types a recorder meets.
var staticPT = map[uint8]Codec{
	0:  {PayloadType: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
	3:  {PayloadType: 3, Name: "GSM", ClockRate: 8000, Channels: 1},
	4:  {PayloadType: 4, Name: "G723", ClockRate: 8000, Channels: 1},
	8:  {PayloadType: 8, Name: "PCMA", ClockRate: 8000, Channels: 1},
	9:  {PayloadType: 9, Name: "G722", ClockRate: 8000, Channels: 1},
	13: {PayloadType: 13, Name: "CN", ClockRate: 8000, Channels: 1},
	18: {PayloadType: 18, Name: "G729", ClockRate: 8000, Channels: 1},
}

// ParseSDP returns the media lines of an SDP body.
func ParseSDP(body []byte) ([]Media, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		// RFC 4566 makes the t= line mandatory, and some SRCs and phones
		// leave it out (Connectel's SIPREC offers); the media are still
		// described: read it as if it said t=0 0.
		fixed, ok := withTiming(body)
		if !ok {
			return nil, fmt.Errorf("sdp: %w", err)
		}
		sd = sdp.SessionDescription{}
		if err2 := sd.Unmarshal(fixed); err2 != nil {
			return nil, fmt.Errorf("sdp: %w", err)
		}
	}
	var sessionAddr netip.Addr
	if sd.ConnectionInformation != nil && sd.ConnectionInformation.Address != nil {
		sessionAddr, _ = netip.ParseAddr(sd.ConnectionInformation.Address.Address)
	}
	sessionDir := direction(sd.Attributes)
	out := make([]Media, 0, len(sd.MediaDescriptions))
	for _, md := range sd.MediaDescriptions {
		addr := sessionAddr
		if md.ConnectionInformation != nil && md.ConnectionInformation.Address != nil {
			if a, err := netip.ParseAddr(md.ConnectionInformation.Address.Address); err == nil {
				addr = a
			}
		}
		m := Media{
			Kind:      md.MediaName.Media,
			Addr:      netip.AddrPortFrom(addr, uint16(md.MediaName.Port.Value)),
			Transport: strings.Join(md.MediaName.Protos, "/"),
			Direction: sessionDir,
		}
		if d := direction(md.Attributes); d != "" {
			m.Direction = d
		}
		if m.Direction == "" {
			m.Direction = "sendrecv"
		}
		m.Label, _ = md.Attribute("label")
		rtpmap := map[uint8]Codec{}
		fmtp := map[uint8]string{}
		for _, a := range md.Attributes {
			switch a.Key {
			case "rtpmap":
				if c, ok := parseRtpmap(a.Value); ok {
					rtpmap[c.PayloadType] = c
				}
			case "fmtp":
				pt, rest, ok := strings.Cut(a.Value, " ")
				if n, err := strconv.ParseUint(pt, 10, 8); ok && err == nil {
					fmtp[uint8(n)] = strings.TrimSpace(rest)
				}
			case "crypto":
				if c, err := ParseCrypto(a.Value); err == nil {
					m.Crypto = append(m.Crypto, c)
				}
			}
		}
		for _, f := range md.MediaName.Formats {
			n, err := strconv.ParseUint(f, 10, 8)
			if err != nil {
				continue // not an RTP payload type
			}
			pt := uint8(n)
			c, ok := rtpmap[pt]
			if !ok {
				c, ok = staticPT[pt]
			}
			if !ok {
				c = Codec{PayloadType: pt}
			}
			c.Fmtp = fmtp[pt]
			m.Codecs = append(m.Codecs, c)
		}
		out = append(out, m)
	}
	return out, nil
}

func direction(attrs []sdp.Attribute) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return ""
}

// parseRtpmap parses "96 telephone-event/8000" or "99 opus/48000/2".
func parseRtpmap(v string) (Codec, bool) {
	pt, enc, ok := strings.Cut(v, " ")
	if !ok {
		return Codec{}, false
	}
	n, err := strconv.ParseUint(pt, 10, 8)
	if err != nil {
		return Codec{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	c := Codec{PayloadType: uint8(n), Name: parts[0], Channels: 1}
	if len(parts) > 1 {
		r, err := strconv.ParseUint(parts[1], 10, 32)
		if err != nil {
			return Codec{}, false
		}
		c.ClockRate = uint32(r)
	}
	if len(parts) > 2 {
		ch, err := strconv.ParseUint(parts[2], 10, 32)
		if err == nil {
			c.Channels = uint32(ch)
		}
	}
	return c, true
}

// withTiming returns body with "t=0 0" after its s= line, if it has an s=
// line and no t= line.
func withTiming(body []byte) ([]byte, bool) {
	lines := bytes.SplitAfter(body, []byte("\n"))
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte("t=")) {
			return nil, false
		}
	}
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("s=")) {
			nl := "\r\n"
			if !bytes.HasSuffix(l, []byte("\r\n")) {
				nl = "\n"
			}
			out := bytes.Join(lines[:i+1], nil)
			out = append(out, "t=0 0"+nl...)
			return append(out, bytes.Join(lines[i+1:], nil)...), true
		}
	}
	return nil, false
}
