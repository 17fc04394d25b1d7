// Package srtpdec decrypts one SRTP stream with an SDES master key, with
// replay protection on: pion/srtp leaves it off by default, and a recorder
// must not take a replayed packet for speech.
package srtpdec

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
)

// ReplayWindow is the replay window in packets (RFC 3711 asks at least 64).
const ReplayWindow = 128

// Errors that say why a packet was dropped.
var (
	ErrAuth   = errors.New("srtp: authentication failed")
	ErrReplay = errors.New("srtp: replayed packet")
)

// Suites maps RFC 4568 / RFC 7714 suite names to pion's profiles.
var suites = map[string]srtp.ProtectionProfile{
	"AES_CM_128_HMAC_SHA1_80": srtp.ProtectionProfileAes128CmHmacSha1_80,
	"AES_CM_128_HMAC_SHA1_32": srtp.ProtectionProfileAes128CmHmacSha1_32,
	"AES_256_CM_HMAC_SHA1_80": srtp.ProtectionProfileAes256CmHmacSha1_80,
	"AES_256_CM_HMAC_SHA1_32": srtp.ProtectionProfileAes256CmHmacSha1_32,
	"AEAD_AES_128_GCM":        srtp.ProtectionProfileAeadAes128Gcm,
	"AEAD_AES_256_GCM":        srtp.ProtectionProfileAeadAes256Gcm,
}

// Supported reports whether suite can be decrypted.
func Supported(suite string) bool { _, ok := suites[suite]; return ok }

// Decryptor decrypts one stream. Not safe for concurrent use.
type Decryptor struct {
	ctx *srtp.Context
	hdr rtp.Header
	buf []byte
}

// New returns a Decryptor for suite with key = master key || master salt.
func New(suite string, key []byte) (*Decryptor, error) {
	p, ok := suites[suite]
	if !ok {
		return nil, fmt.Errorf("srtp: suite %s not supported", suite)
	}
	kl, _ := p.KeyLen()
	sl, _ := p.SaltLen()
	if len(key) != kl+sl {
		return nil, fmt.Errorf("srtp: %s needs a %d-byte key and salt, got %d bytes", suite, kl+sl, len(key))
	}
	ctx, err := srtp.CreateContext(key[:kl], key[kl:], p, srtp.SRTPReplayProtection(ReplayWindow), srtp.SRTCPReplayProtection(ReplayWindow))
	if err != nil {
		return nil, fmt.Errorf("srtp: %w", err)
	}
	return &Decryptor{ctx: ctx, buf: make([]byte, 0, 1500)}, nil
}

// Decrypt returns the RTP packet inside pkt, valid until the next call.
// A forged or corrupted packet fails with ErrAuth, a replayed one with
// ErrReplay; neither changes the stream's state.
func (d *Decryptor) Decrypt(pkt []byte) ([]byte, error) {
	out, err := d.ctx.DecryptRTP(d.buf[:0], pkt, &d.hdr)
	return d.result(out, err, "srtp")
}

// DecryptRTCP returns the RTCP packet inside an SRTCP packet, valid until
// the next call, with the same errors as Decrypt.
func (d *Decryptor) DecryptRTCP(pkt []byte) ([]byte, error) {
	out, err := d.ctx.DecryptRTCP(d.buf[:0], pkt, nil)
	return d.result(out, err, "srtcp")
}

// result keeps out's buffer for reuse and says why a packet was refused.
func (d *Decryptor) result(out []byte, err error, proto string) ([]byte, error) {
	switch {
	case err == nil:
		d.buf = out[:0]
		return out, nil
	case errors.Is(err, srtp.ErrFailedToVerifyAuthTag), strings.Contains(err.Error(), "failed to verify auth tag"): // GCM's is not wrapped
		return nil, ErrAuth
	case strings.Contains(err.Error(), "duplicated"): // pion's replay error is unexported
		return nil, ErrReplay
	default:
		return nil, fmt.Errorf("%s: %w", proto, err)
	}
}
