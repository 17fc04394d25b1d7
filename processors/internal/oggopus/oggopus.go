// Package oggopus writes Opus packets, as they came in RTP, into an Ogg
// Opus file (RFC 7845): the audio is kept as it was sent, not transcoded.
package oggopus

import (
	"encoding/binary"
	"errors"
	"io"
)

// crcTable is Ogg's CRC-32: polynomial 0x04c11db7, not reflected.
var crcTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

// Checksum is the CRC of an Ogg page whose CRC field is zero.
func Checksum(page []byte) uint32 {
	var c uint32
	for _, b := range page {
		c = c<<8 ^ crcTable[byte(c>>24)^b]
	}
	return c
}

// Page header flags.
const (
	flagBOS = 0x02
	flagEOS = 0x04
)

// Writer writes one logical Ogg Opus stream, one packet per page.
type Writer struct {
	w       io.Writer
	serial  uint32
	seq     uint32
	page    []byte
	pending []byte // the last packet, written at Close with EOS set
	granule uint64
	started bool
}

// NewWriter writes the identification and comment headers.
func NewWriter(w io.Writer, serial uint32, channels uint8) (*Writer, error) {
	if channels == 0 || channels > 2 {
		return nil, errors.New("oggopus: 1 or 2 channels")
	}
	o := &Writer{w: w, serial: serial}
	head := []byte("OpusHead")
	head = append(head, 1, channels)
	head = binary.LittleEndian.AppendUint16(head, 0)     // pre-skip: unknown for a captured stream
	head = binary.LittleEndian.AppendUint32(head, 48000) // input rate
	head = binary.LittleEndian.AppendUint16(head, 0)     // output gain
	head = append(head, 0)                               // mapping family 0
	if err := o.writePage(head, 0, flagBOS); err != nil {
		return nil, err
	}
	tags := []byte("OpusTags")
	vendor := "verbatim"
	tags = binary.LittleEndian.AppendUint32(tags, uint32(len(vendor)))
	tags = append(tags, vendor...)
	tags = binary.LittleEndian.AppendUint32(tags, 0)
	if err := o.writePage(tags, 0, 0); err != nil {
		return nil, err
	}
	return o, nil
}

// WritePacket adds one Opus packet ending at granule (48 kHz samples from
// the stream's start). Packets must come in order.
func (o *Writer) WritePacket(p []byte, granule uint64) error {
	if o.started {
		if err := o.writePage(o.pending, o.granule, 0); err != nil {
			return err
		}
	}
	o.started = true
	o.pending, o.granule = append(o.pending[:0], p...), granule
	return nil
}

// Close writes the last packet with the end-of-stream flag.
func (o *Writer) Close() error {
	if !o.started {
		return o.writePage(nil, 0, flagEOS)
	}
	return o.writePage(o.pending, o.granule, flagEOS)
}

func (o *Writer) writePage(packet []byte, granule uint64, flags byte) error {
	lacing := make([]byte, 0, len(packet)/255+1)
	for n := len(packet); ; n -= 255 {
		if n < 255 {
			lacing = append(lacing, byte(n))
			break
		}
		lacing = append(lacing, 255)
	}
	if len(lacing) > 255 {
		return errors.New("oggopus: packet too large for one page")
	}
	p := append(o.page[:0], "OggS"...)
	p = append(p, 0, flags)
	p = binary.LittleEndian.AppendUint64(p, granule)
	p = binary.LittleEndian.AppendUint32(p, o.serial)
	p = binary.LittleEndian.AppendUint32(p, o.seq)
	p = binary.LittleEndian.AppendUint32(p, 0) // CRC, below
	p = append(p, byte(len(lacing)))
	p = append(p, lacing...)
	p = append(p, packet...)
	binary.LittleEndian.PutUint32(p[22:], Checksum(p))
	o.page, o.seq = p, o.seq+1
	_, err := o.w.Write(p)
	return err
}

// Duration returns the samples (at 48 kHz) an Opus packet holds, from its
// TOC byte (RFC 6716 §3.1), or 0 if it is malformed.
func Duration(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	toc := p[0]
	cfg := toc >> 3
	var frame int
	switch {
	case cfg < 12: // SILK: 10, 20, 40, 60 ms
		frame = []int{480, 960, 1920, 2880}[cfg%4]
	case cfg < 16: // Hybrid: 10, 20 ms
		frame = []int{480, 960}[cfg%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = []int{120, 240, 480, 960}[cfg%4]
	}
	switch toc & 3 {
	case 0:
		return frame
	case 1, 2:
		return 2 * frame
	default:
		if len(p) < 2 {
			return 0
		}
		return int(p[1]&0x3f) * frame
	}
}
