package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Streaming encryption for recordings: the STREAM construction (Hoang,
// Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and its
// Nonce-Reuse Misuse-Resistance"), as age and Tink use it. The plaintext is
// cut into ChunkSize chunks, each sealed with AES-256-GCM under the nonce
//
//	prefix (7 random bytes) || chunk counter (4 bytes, big endian) || last (1 byte: 1 on the final chunk)
//
// so chunks cannot be reordered, dropped or truncated without failing to
// open. The object is: magic "VBS1", the 7-byte prefix, then the sealed
// chunks (ChunkSize+16 bytes each, the last one shorter). Memory per stream
// is two chunk buffers, whatever the recording's length.

// ChunkSize is the plaintext size of each sealed chunk.
const ChunkSize = 64 << 10

const (
	streamMagic  = "VBS1"
	prefixSize   = 7
	streamHeader = len(streamMagic) + prefixSize
	tagSize      = 16
)

// ErrStreamCorrupt is returned when a sealed stream fails to open: wrong
// key, tampered, reordered or truncated.
var ErrStreamCorrupt = errors.New("seal: sealed stream is corrupt or truncated")

func streamAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: stream key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func streamNonce(dst *[12]byte, prefix []byte, counter uint32, last bool) []byte {
	copy(dst[:prefixSize], prefix)
	binary.BigEndian.PutUint32(dst[prefixSize:], counter)
	dst[11] = 0
	if last {
		dst[11] = 1
	}
	return dst[:]
}

// StreamWriter seals what is written to it onto an underlying writer. Close
// seals the final chunk; without Close the stream is unreadable. It also
// hashes the plaintext and the ciphertext for RecordingStored.
type StreamWriter struct {
	w         io.Writer
	aead      cipher.AEAD
	aad       []byte
	prefix    [prefixSize]byte
	counter   uint32
	buf       []byte // pending plaintext, up to ChunkSize
	out       []byte
	plainHash hash.Hash
	ctHash    hash.Hash
	plainN    int64
	ctN       int64
	closed    bool
}

// NewStreamWriter starts a sealed stream under key. aad binds the stream to
// its context (e.g. tenant and object key) and must be given again to open.
func NewStreamWriter(w io.Writer, key, aad []byte) (*StreamWriter, error) {
	return newStreamWriter(w, key, aad, true)
}

// NewSpoolWriter is NewStreamWriter without the digests (Sums returns
// nil), for temporary spools whose bytes are never announced: hashing
// costs more than sealing.
func NewSpoolWriter(w io.Writer, key, aad []byte) (*StreamWriter, error) {
	return newStreamWriter(w, key, aad, false)
}

func newStreamWriter(w io.Writer, key, aad []byte, sums bool) (*StreamWriter, error) {
	aead, err := streamAEAD(key)
	if err != nil {
		return nil, err
	}
	s := &StreamWriter{w: w, aead: aead, aad: append([]byte(nil), aad...),
		buf: make([]byte, 0, ChunkSize), out: make([]byte, 0, ChunkSize+tagSize)}
	if sums {
		s.plainHash, s.ctHash = sha256.New(), sha256.New()
	}
	if _, err := rand.Read(s.prefix[:]); err != nil {
		return nil, err
	}
	hdr := append([]byte(streamMagic), s.prefix[:]...)
	if err := s.emit(hdr); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *StreamWriter) emit(b []byte) error {
	n, err := s.w.Write(b)
	if s.ctHash != nil {
		s.ctHash.Write(b[:n])
	}
	s.ctN += int64(n)
	return err
}

func (s *StreamWriter) sealChunk(last bool) error {
	var nonce [12]byte
	s.out = s.aead.Seal(s.out[:0], streamNonce(&nonce, s.prefix[:], s.counter, last), s.buf, s.aad)
	s.counter++
	if s.counter == 0 {
		return errors.New("seal: stream too long")
	}
	s.buf = s.buf[:0]
	return s.emit(s.out)
}

// Write implements io.Writer.
func (s *StreamWriter) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("seal: write to closed stream")
	}
	n := len(p)
	if s.plainHash != nil {
		s.plainHash.Write(p)
	}
	s.plainN += int64(n)
	for len(p) > 0 {
		// A full buffer is sealed only when more data follows, so the
		// final chunk is never empty unless the whole stream is.
		if len(s.buf) == ChunkSize {
			if err := s.sealChunk(false); err != nil {
				return 0, err
			}
		}
		k := copy(s.buf[len(s.buf):ChunkSize], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
	}
	return n, nil
}

// Close seals the final chunk. It does not close the underlying writer.
func (s *StreamWriter) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.sealChunk(true)
}

// Sums returns the SHA-256 and sizes of the plaintext and of the sealed
// stream; valid after Close.
func (s *StreamWriter) Sums() (plain, sealed []byte, plainSize, sealedSize int64) {
	if s.plainHash == nil {
		return nil, nil, s.plainN, s.ctN
	}
	return s.plainHash.Sum(nil), s.ctHash.Sum(nil), s.plainN, s.ctN
}

// SealedSize returns the size of a sealed stream of n plaintext bytes.
func SealedSize(n int64) int64 {
	chunks := n / ChunkSize
	if n%ChunkSize != 0 || n == 0 {
		chunks++
	}
	return int64(streamHeader) + n + chunks*tagSize
}

// StreamReader opens a sealed stream.
type StreamReader struct {
	r       io.Reader
	aead    cipher.AEAD
	aad     []byte
	prefix  []byte
	counter uint32
	in      []byte
	next    []byte // one byte of lookahead tells the last chunk apart
	plain   []byte
	pos     int
	done    bool
}

// NewStreamReader opens a stream sealed by NewStreamWriter with the same
// key and aad.
func NewStreamReader(r io.Reader, key, aad []byte) (*StreamReader, error) {
	aead, err := streamAEAD(key)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, streamHeader)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrStreamCorrupt, err)
	}
	if string(hdr[:len(streamMagic)]) != streamMagic {
		return nil, fmt.Errorf("%w: not a Verbatim sealed stream", ErrStreamCorrupt)
	}
	return &StreamReader{r: r, aead: aead, aad: append([]byte(nil), aad...), prefix: hdr[len(streamMagic):],
		in: make([]byte, ChunkSize+tagSize+1)}, nil
}

func (s *StreamReader) fill() error {
	// Read up to one full sealed chunk plus one byte of lookahead.
	n := copy(s.in, s.next)
	m, err := io.ReadFull(s.r, s.in[n:])
	n += m
	last := false
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		last = true
	case err != nil:
		return err
	}
	chunk := s.in[:n]
	s.next = s.next[:0]
	if !last {
		chunk = s.in[:ChunkSize+tagSize]
		s.next = append(s.next[:0], s.in[ChunkSize+tagSize:n]...)
	}
	var nonce [12]byte
	pt, oerr := s.aead.Open(s.plain[:0], streamNonce(&nonce, s.prefix, s.counter, last), chunk, s.aad)
	if oerr != nil {
		return fmt.Errorf("%w: chunk %d", ErrStreamCorrupt, s.counter)
	}
	s.counter++
	s.plain, s.pos, s.done = pt, 0, last
	return nil
}

// Read implements io.Reader. It returns ErrStreamCorrupt (wrapped) as soon
// as a chunk fails to open; bytes already returned were authentic.
func (s *StreamReader) Read(p []byte) (int, error) {
	for s.pos == len(s.plain) {
		if s.done {
			return 0, io.EOF
		}
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.plain[s.pos:])
	s.pos += n
	return n, nil
}
