package pcapread

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxRecord caps one captured frame, as tcpdump does (MAXIMUM_SNAPLEN,
// 256 KiB): a record header claiming more is damage, not a frame, and
// costs nothing to skip.
const MaxRecord = 262144

// maxBlock caps one pcapng block: a frame of MaxRecord and room for its
// options, or an interface or name block.
const maxBlock = MaxRecord + 1<<16

// Damage is one stretch of a capture file skipped because its framing was
// corrupt (a record or block whose length cannot be), or the truncated end
// of the file.
type Damage struct {
	// Frame is the number of frames read before the damage.
	Frame uint64
	// Offset is where the damage starts in the file, Skipped how many
	// bytes were skipped to the next valid record (to the end of the file
	// when Truncated).
	Offset, Skipped int64
	Truncated       bool
	Reason          string
}

func (d Damage) String() string {
	if d.Truncated {
		return fmt.Sprintf("capture ended early after frame %d (offset %d): %s", d.Frame, d.Offset, d.Reason)
	}
	return fmt.Sprintf("capture damaged after frame %d (offset %d): %s; %d bytes skipped to the next valid record", d.Frame, d.Offset, d.Reason, d.Skipped)
}

// framer yields a capture file's bytes with damaged records cut out, so
// that gopacket's pcapgo readers parse only well-framed records; what it
// cut is reported through onDamage. For classic pcap it resynchronises on
// the next position where two record headers in a row are plausible; for
// pcapng on the next block of a known type whose trailing length matches.
type framer struct {
	r        *bufio.Reader
	ng       bool
	order    binary.ByteOrder
	snap     uint32
	fracMax  uint32 // 1e6, or 1e9 for nanosecond captures
	off      int64  // bytes of the input consumed
	frames   uint64
	lastSec  uint32
	pass     int  // bytes of a checked record still to pass on to the reader
	header   bool // the file header has been passed on
	onDamage func(Damage)
	done     bool
}

func newFramer(r *bufio.Reader, onDamage func(Damage)) *framer {
	return &framer{r: r, onDamage: onDamage}
}

// Read implements io.Reader. The bytes of a checked record go straight
// from the input to p, not through a buffer of the framer's own.
// It fills p with as many checked records as fit: the reader above reads
// through a buffer, and one record a call would cost a call a record.
func (f *framer) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if f.pass == 0 {
			if f.done {
				break
			}
			if err := f.next(); err != nil {
				if total > 0 {
					break // what was read is returned first; next() fails again
				}
				return 0, err
			}
			continue
		}
		n, err := f.r.Read(p[:min(len(p), f.pass)])
		f.pass -= n
		f.off += int64(n)
		total += n
		p = p[n:]
		if err != nil && !errors.Is(err, io.EOF) {
			return total, err
		}
		if n == 0 {
			break
		}
	}
	if total == 0 && f.done {
		return 0, io.EOF
	}
	return total, nil
}

// take passes the next n bytes of the input on, as checked (they have been
// peeked, so they are in the buffer).
func (f *framer) take(n int) error {
	f.pass = n
	return nil
}

func (f *framer) next() error {
	if !f.header {
		f.header = true
		return f.fileHeader()
	}
	if f.ng {
		return f.block()
	}
	return f.record()
}

func (f *framer) fileHeader() error {
	magic, err := f.r.Peek(4)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(magic) == 0x0A0D0D0A {
		f.ng = true
		return f.block()
	}
	h, err := f.r.Peek(24)
	if err != nil {
		return fmt.Errorf("pcapread: file header: %w", err)
	}
	switch binary.LittleEndian.Uint32(h) {
	case 0xa1b2c3d4:
		f.order, f.fracMax = binary.LittleEndian, 1e6
	case 0xa1b23c4d:
		f.order, f.fracMax = binary.LittleEndian, 1e9
	case 0xd4c3b2a1:
		f.order, f.fracMax = binary.BigEndian, 1e6
	case 0x4d3cb2a1:
		f.order, f.fracMax = binary.BigEndian, 1e9
	default:
		return errors.New("pcapread: not a pcap or pcapng file")
	}
	f.snap = f.order.Uint32(h[16:])
	return f.take(24)
}

// recordLen returns the captured length of the record header h, and
// whether the header is plausible: a length within the snap length and
// tcpdump's cap and not above the original length, a sub-second part in
// range.
func (f *framer) recordLen(h []byte) (int, bool) {
	incl, orig, frac := f.order.Uint32(h[8:]), f.order.Uint32(h[12:]), f.order.Uint32(h[4:])
	limit := uint32(MaxRecord)
	if f.snap > 0 && f.snap < limit {
		limit = f.snap
	}
	return int(incl), incl <= limit && incl <= orig && frac < f.fracMax
}

func (f *framer) record() error {
	h, err := f.r.Peek(16)
	if errors.Is(err, io.EOF) && len(h) == 0 {
		f.done = true
		return nil
	}
	if err != nil {
		return f.truncated(fmt.Sprintf("the file ends inside a record header (%d of 16 bytes)", len(h)))
	}
	n, ok := f.recordLen(h)
	if !ok {
		reason := fmt.Sprintf("a record header claims %d bytes (snap length %d, at most %d)", f.order.Uint32(h[8:]), f.snap, MaxRecord)
		return f.resync(reason, f.plausibleRecord, 1)
	}
	if _, err := f.r.Peek(16 + n); err != nil {
		return f.truncated(fmt.Sprintf("the file ends inside frame %d (%d bytes claimed)", f.frames+1, n))
	}
	f.frames++
	f.lastSec = f.order.Uint32(h)
	return f.take(16 + n)
}

// plausibleRecord reports whether a record starts at b: its header is
// plausible, its time within a day of the last good record's, and it is
// followed by the end of the file or another plausible header.
func (f *framer) plausibleRecord(b []byte, atEOF bool) (bool, bool) {
	if len(b) < 16 {
		return false, !atEOF
	}
	n, ok := f.recordLen(b)
	if sec := f.order.Uint32(b); !ok || (f.lastSec != 0 && (sec+86400 < f.lastSec || sec > f.lastSec+86400)) {
		return false, false
	}
	rest := b[16+min(n, len(b)-16):]
	if len(b) < 16+n+16 {
		if atEOF && len(b) == 16+n {
			return true, false
		}
		return false, !atEOF && len(b) < 16+n+16
	}
	_, next := f.recordLen(rest)
	return next, false
}

// block passes on one pcapng block, or resynchronises past a damaged one.
func (f *framer) block() error {
	h, err := f.r.Peek(12)
	if errors.Is(err, io.EOF) && len(h) == 0 {
		f.done = true
		return nil
	}
	if err != nil {
		return f.truncated(fmt.Sprintf("the file ends inside a block header (%d of 12 bytes)", len(h)))
	}
	if binary.LittleEndian.Uint32(h) == 0x0A0D0D0A {
		// A section header: its byte-order magic sets the order.
		switch binary.LittleEndian.Uint32(h[8:]) {
		case 0x1A2B3C4D:
			f.order = binary.LittleEndian
		case 0x4D3C2B1A:
			f.order = binary.BigEndian
		default:
			return f.resync("a section header with no byte-order magic", f.plausibleBlock, 4)
		}
	}
	if f.order == nil {
		return errors.New("pcapread: pcapng: no section header")
	}
	n, ok := f.blockLen(h)
	if !ok {
		return f.resync(fmt.Sprintf("a block (type 0x%x) claims %d bytes", f.order.Uint32(h), f.order.Uint32(h[4:])), f.plausibleBlock, 4)
	}
	b, err := f.r.Peek(n)
	if err != nil {
		return f.truncated(fmt.Sprintf("the file ends inside a block of %d bytes", n))
	}
	if f.order.Uint32(b[n-4:]) != uint32(n) {
		return f.resync(fmt.Sprintf("a block (type 0x%x) whose trailing length %d is not its length %d", f.order.Uint32(b), f.order.Uint32(b[n-4:]), n), f.plausibleBlock, 4)
	}
	switch f.order.Uint32(b) {
	case 3, 6: // simple and enhanced packet blocks
		f.frames++
	}
	return f.take(n)
}

// blockLen returns a block's total length, and whether it can be one.
func (f *framer) blockLen(h []byte) (int, bool) {
	n := f.order.Uint32(h[4:])
	return int(n), n >= 12 && n%4 == 0 && n <= maxBlock
}

// knownBlock reports whether t is a pcapng block type a writer emits.
func knownBlock(t uint32) bool {
	switch t {
	case 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0xA, 0xBAD, 0x40000BAD:
		return true
	}
	return false
}

// plausibleBlock reports whether a block of a known type starts at b, with
// a possible length and a trailing length equal to it.
func (f *framer) plausibleBlock(b []byte, atEOF bool) (bool, bool) {
	if len(b) < 12 {
		return false, !atEOF
	}
	if t := f.order.Uint32(b); !knownBlock(t) || t == 0x0A0D0D0A {
		return false, false
	}
	n, ok := f.blockLen(b)
	if !ok {
		return false, false
	}
	if len(b) < n {
		return false, !atEOF
	}
	return f.order.Uint32(b[n-4:]) == uint32(n), false
}

// resync skips from the damaged position to the next one where plausible
// says a record starts, trying every step bytes; plausible may ask for
// more bytes (more) when it cannot tell from those it has.
func (f *framer) resync(reason string, plausible func(b []byte, atEOF bool) (ok, more bool), step int) error {
	d := Damage{Frame: f.frames, Offset: f.off, Reason: reason}
	skip := step
	for {
		window, err := f.r.Peek(f.r.Size())
		atEOF := err != nil
		for skip < len(window) {
			ok, more := plausible(window[skip:], atEOF)
			if more && skip > 0 && !atEOF {
				break // read on, and look at this position again
			}
			if ok {
				if _, err := f.r.Discard(skip); err != nil {
					return err
				}
				f.off += int64(skip)
				d.Skipped += int64(skip)
				f.onDamage(d)
				return nil
			}
			skip += step
		}
		if atEOF && skip >= len(window) {
			d.Skipped += int64(len(window))
			f.off += int64(len(window))
			_, _ = f.r.Discard(len(window))
			d.Truncated = true
			d.Reason += "; no valid record after it"
			f.onDamage(d)
			f.done = true
			return nil
		}
		// Keep the bytes from skip on: discard the ones before.
		if _, err := f.r.Discard(skip); err != nil {
			return err
		}
		f.off += int64(skip)
		d.Skipped += int64(skip)
		skip = 0
	}
}

// truncated ends the read at a damaged end of file.
func (f *framer) truncated(reason string) error {
	rest, _ := f.r.Peek(f.r.Size())
	f.onDamage(Damage{Frame: f.frames, Offset: f.off, Skipped: int64(len(rest)), Truncated: true, Reason: reason})
	f.off += int64(len(rest))
	_, _ = f.r.Discard(len(rest))
	f.done = true
	return nil
}
