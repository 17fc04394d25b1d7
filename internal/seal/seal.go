// Package seal encrypts personal data and media with a call's data key
// (AES-256-GCM), binding each value to its tenant, key and type through the
// additional authenticated data that schemas/README.md specifies.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// KeySize is the size of a data key: AES-256.
const KeySize = 32

// ErrOpen is returned when a sealed value fails authentication: wrong key,
// wrong tenant or type, or tampered bytes.
var ErrOpen = errors.New("seal: message authentication failed")

// Sealer seals and opens values with one data key. It is safe for
// concurrent use.
type Sealer struct {
	tenant string
	keyID  string
	aead   cipher.AEAD
}

// New returns a Sealer for a tenant's data key.
func New(tenant, keyID string, key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: data key %s is %d bytes, want %d", keyID, len(key), KeySize)
	}
	if tenant == "" || keyID == "" {
		return nil, errors.New("seal: tenant and key id are required")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealer{tenant: tenant, keyID: keyID, aead: aead}, nil
}

// KeyID returns the id of the data key.
func (s *Sealer) KeyID() string { return s.keyID }

// aad appends the additional authenticated data for typ to dst.
func (s *Sealer) aad(dst []byte, typ string) []byte {
	dst = append(dst, s.tenant...)
	dst = append(dst, 0)
	dst = append(dst, s.keyID...)
	dst = append(dst, 0)
	return append(dst, typ...)
}

// Seal encrypts plaintext as a value of type typ. The returned message's
// Ciphertext is appended to dst[:0] so callers can reuse buffers.
func (s *Sealer) Seal(dst []byte, typ string, plaintext []byte) (*verbatimv1.Sealed, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	var aadBuf [128]byte
	ct := s.aead.Seal(dst[:0], nonce, plaintext, s.aad(aadBuf[:0], typ))
	return &verbatimv1.Sealed{KeyId: s.keyID, Nonce: nonce, Ciphertext: ct, Type: typ}, nil
}

// Open decrypts a sealed value, appending the plaintext to dst[:0]. It fails
// with ErrOpen unless m was sealed by this key for this tenant, and with a
// type mismatch error unless m.Type is typ.
func (s *Sealer) Open(dst []byte, typ string, m *verbatimv1.Sealed) ([]byte, error) {
	if m.GetKeyId() != s.keyID {
		return nil, fmt.Errorf("seal: value sealed with key %q, have %q", m.GetKeyId(), s.keyID)
	}
	if m.GetType() != typ {
		return nil, fmt.Errorf("seal: value has type %q, want %q", m.GetType(), typ)
	}
	if len(m.GetNonce()) != s.aead.NonceSize() {
		return nil, fmt.Errorf("%w: nonce is %d bytes", ErrOpen, len(m.GetNonce()))
	}
	var aadBuf [128]byte
	pt, err := s.aead.Open(dst[:0], m.GetNonce(), m.GetCiphertext(), s.aad(aadBuf[:0], typ))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
