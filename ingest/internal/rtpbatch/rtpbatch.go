// Package rtpbatch groups the RTP packets of one stream into sealed
// PacketBatch events of about one second each, so the media topic carries
// one record per stream-second instead of one per packet. The per-packet
// path appends into reused buffers and allocates nothing in steady state;
// sealing happens once per batch.
package rtpbatch

import (
	"errors"
	"fmt"
	"time"

	"github.com/pion/rtp"

	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// SealedType is the Sealed.type of PacketBatch.packets.
const SealedType = schemas.SealedRTPPackets

// ErrNotRTP is returned for packets that are not RTP version 2 or are too
// short for their header.
var ErrNotRTP = errors.New("rtpbatch: not an RTP packet")

// Defaults for Config.
const (
	DefaultMaxDuration = time.Second
	DefaultMaxBytes    = 256 << 10
)

// Config says which stream a Batcher collects and when a batch is full.
type Config struct {
	CallID, StreamID string
	// MaxDuration closes a batch when a packet arrives this long after the
	// batch's first packet. Default DefaultMaxDuration.
	MaxDuration time.Duration
	// MaxBytes closes a batch when its packets reach this size.
	// Default DefaultMaxBytes.
	MaxBytes int
	// Shared, if set, holds the sealed packets and arrival offsets of the
	// batches this Batcher returns, for every Batcher given the same one:
	// a returned batch is then valid only until the next batch any of
	// them returns, so use it (marshal it) before. This saves two
	// allocations of a batch's size per batch.
	Shared *Shared
}

// Shared is scratch space for the batches of Batchers used by one
// goroutine (see Config.Shared). The zero value is ready.
type Shared struct {
	sealed  []byte
	offsets []uint32
}

// Batcher collects one stream. Not safe for concurrent use: give each
// stream to one goroutine.
type Batcher struct {
	cfg    Config
	sealer *seal.Sealer

	buf        []byte   // plaintext: uvarint length + packet, repeated
	offsets    []uint32 // arrival offsets in microseconds
	first      time.Time
	firstSeq   uint64
	lastSeq    uint64
	ssrc       uint32
	pt         uint8
	count      uint32
	batchIndex uint64

	// Extended sequence number state (RFC 3550 A.1, without probation).
	haveSeq  bool
	maxSeq   uint16
	cycles   uint64
	lastSSRC uint32

	hdr rtp.Header
}

// New returns a Batcher sealing with s.
func New(cfg Config, s *seal.Sealer) *Batcher {
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = DefaultMaxDuration
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Batcher{cfg: cfg, sealer: s, buf: make([]byte, 0, 16<<10), offsets: make([]uint32, 0, 64)}
}

// extend returns the extended sequence number of seq.
func (b *Batcher) extend(seq uint16) uint64 {
	if !b.haveSeq {
		b.haveSeq, b.maxSeq = true, seq
		return uint64(seq)
	}
	delta := seq - b.maxSeq
	switch {
	case delta < 0x8000: // forward, possibly wrapping
		if seq < b.maxSeq {
			b.cycles += 1 << 16
		}
		b.maxSeq = seq
		return b.cycles + uint64(seq)
	default: // late or duplicated packet from before maxSeq
		if seq > b.maxSeq && b.cycles > 0 { // from the previous cycle
			return b.cycles - 1<<16 + uint64(seq)
		}
		return b.cycles + uint64(seq)
	}
}

// Add appends one RTP packet that arrived at the given time. When the
// packet completes a batch (by duration or size), the completed batch is
// returned and the packet starts the next one. pkt is copied.
func (b *Batcher) Add(at time.Time, pkt []byte) (*verbatimv1.PacketBatch, error) {
	if _, err := b.hdr.Unmarshal(pkt); err != nil {
		return nil, fmt.Errorf("%w: %d bytes: %w", ErrNotRTP, len(pkt), err)
	}
	if b.hdr.Version != 2 {
		return nil, fmt.Errorf("%w: version %d", ErrNotRTP, b.hdr.Version)
	}
	var done *verbatimv1.PacketBatch
	newSource := b.haveSeq && b.hdr.SSRC != b.lastSSRC
	if b.count > 0 && (newSource || at.Sub(b.first) >= b.cfg.MaxDuration || len(b.buf)+len(pkt) > b.cfg.MaxBytes) {
		var err error
		if done, err = b.Flush(); err != nil {
			return nil, err
		}
	}
	if newSource {
		// A new SSRC (a transfer, a re-INVITE, a restarted sender): its
		// sequence numbers start anywhere, so numbering restarts. Each
		// batch holds one SSRC.
		b.haveSeq, b.cycles = false, 0
	}
	b.lastSSRC = b.hdr.SSRC
	ext := b.extend(b.hdr.SequenceNumber)
	if b.count == 0 {
		b.first, b.firstSeq, b.ssrc, b.pt = at, ext, b.hdr.SSRC, b.hdr.PayloadType
	}
	b.lastSeq = ext
	b.buf = schemas.AppendPacket(b.buf, pkt)
	b.offsets = append(b.offsets, uint32(at.Sub(b.first)/time.Microsecond))
	b.count++
	return done, nil
}

// Empty reports whether no packet has been added since the last batch.
func (b *Batcher) Empty() bool { return b.count == 0 }

// Flush seals and returns the open batch, or nil if it is empty. Call it
// when the stream or the call ends.
func (b *Batcher) Flush() (*verbatimv1.PacketBatch, error) {
	if b.count == 0 {
		return nil, nil //nolint:nilnil // no batch is not an error
	}
	var dst []byte
	offsets := b.offsets
	if sh := b.cfg.Shared; sh != nil {
		dst = sh.sealed
		sh.offsets = append(sh.offsets[:0], b.offsets...)
		offsets = sh.offsets
	} else {
		offsets = append([]uint32(nil), b.offsets...)
	}
	sealed, err := b.sealer.Seal(dst, SealedType, b.buf)
	if err != nil {
		return nil, err
	}
	if sh := b.cfg.Shared; sh != nil {
		sh.sealed = sealed.GetCiphertext()[:0] // keep what it grew to
	}
	pb := &verbatimv1.PacketBatch{
		CallId:               b.cfg.CallID,
		StreamId:             b.cfg.StreamID,
		Ssrc:                 b.ssrc,
		PayloadType:          uint32(b.pt),
		BatchIndex:           b.batchIndex,
		FirstSequence:        b.firstSeq,
		LastSequence:         b.lastSeq,
		PacketCount:          b.count,
		FirstArrivalUnixNano: b.first.UnixNano(),
		ArrivalOffsetsUs:     offsets,
		Packets:              sealed,
	}
	b.batchIndex++
	b.count = 0
	b.buf = b.buf[:0]
	b.offsets = b.offsets[:0]
	return pb, nil
}
