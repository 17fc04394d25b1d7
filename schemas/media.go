package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SealedRTPPackets is the Sealed.type of PacketBatch.packets.
const SealedRTPPackets = "verbatim.v1.rtp-packets"

// ErrBatchFraming is returned for a PacketBatch plaintext that is not a
// sequence of (uvarint length, packet).
var ErrBatchFraming = errors.New("schemas: malformed PacketBatch plaintext")

// AppendPacket appends one RTP packet to a PacketBatch plaintext.
func AppendPacket(dst, pkt []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(pkt)))
	return append(dst, pkt...)
}

// Packets calls fn for each RTP packet of an opened PacketBatch plaintext,
// in arrival order, and fails on malformed framing.
func Packets(plaintext []byte, fn func(pkt []byte) error) error {
	for len(plaintext) > 0 {
		n, k := binary.Uvarint(plaintext)
		if k <= 0 || n > uint64(len(plaintext)-k) {
			return fmt.Errorf("%w: %d bytes from its end", ErrBatchFraming, len(plaintext))
		}
		if err := fn(plaintext[k : k+int(n)]); err != nil {
			return err
		}
		plaintext = plaintext[k+int(n):]
	}
	return nil
}
