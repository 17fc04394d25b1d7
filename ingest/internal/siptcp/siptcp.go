// Package siptcp reassembles SIP messages carried over TCP, as seen
// passively in a capture: segments arrive per direction in any order, with
// retransmissions and gaps, and one segment may hold several messages or
// part of one (RFC 3261 §18.3: messages on a stream are framed by
// Content-Length).
package siptcp

import (
	"bytes"
	"net/netip"
	"strconv"
	"time"
)

// Limits bound memory per direction of a connection.
const (
	// MaxBuffered is how much unframed or out-of-order data a direction
	// may hold before the oldest gap is skipped.
	MaxBuffered = 256 << 10
	// MaxMessage bounds one SIP message; a larger declared length is
	// taken for garbage and the stream is resynchronised.
	MaxMessage = 64 << 10
)

// Stats counts what the reassembler did.
type Stats struct {
	Segments       uint64 // TCP segments with payload
	Retransmitted  uint64 // segments (or parts) already seen
	Messages       uint64 // SIP messages delivered
	KeepAlives     uint64 // runs of CRLF keep-alive between messages (a run split across segments counts per part)
	GapBytes       uint64 // bytes never captured, skipped
	DiscardedBytes uint64 // bytes that framed no message, skipped to resynchronise
	Flows          int    // directions tracked now
}

type flowKey struct{ src, dst netip.AddrPort }

type segment struct {
	seq  uint32
	data []byte
}

type flow struct {
	started bool   // next is known
	next    uint32 // next expected sequence number
	buf     []byte // in-order bytes not framed yet
	ooo     []segment
	last    time.Time
}

// Reassembler turns TCP segments into SIP messages, per direction.
type Reassembler struct {
	flows map[flowKey]*flow
	stats Stats
}

// New returns an empty Reassembler.
func New() *Reassembler { return &Reassembler{flows: map[flowKey]*flow{}} }

// Known reports whether the direction src to dst is being reassembled.
func (r *Reassembler) Known(src, dst netip.AddrPort) bool {
	_, ok := r.flows[flowKey{src, dst}]
	return ok
}

// Stats reports the counters so far.
func (r *Reassembler) Stats() Stats {
	s := r.stats
	s.Flows = len(r.flows)
	return s
}

// Segment takes one TCP segment of the direction src to dst and calls fn
// for every SIP message it completes, in stream order. msg is valid during
// the call only.
func (r *Reassembler) Segment(at time.Time, src, dst netip.AddrPort, seq uint32, syn, fin, rst bool, payload []byte, fn func(msg []byte)) {
	k := flowKey{src, dst}
	f := r.flows[k]
	if rst {
		delete(r.flows, k)
		return
	}
	if f == nil {
		f = &flow{}
		r.flows[k] = f
	}
	f.last = at
	if syn {
		f.started, f.next, f.buf, f.ooo = true, seq+1, f.buf[:0], nil
		seq++
	}
	if len(payload) > 0 {
		r.stats.Segments++
		if !f.started { // joined mid-stream: start here
			f.started, f.next = true, seq
		}
		r.add(f, seq, payload)
		r.frame(f, fn)
	}
	if fin {
		delete(r.flows, k)
	}
}

// add places payload at seq: in order, it extends buf; earlier bytes are
// retransmissions; later ones wait for the gap to fill.
func (r *Reassembler) add(f *flow, seq uint32, payload []byte) {
	if d := int32(f.next - seq); d > 0 { // starts before next: trim what was seen
		if int(d) >= len(payload) {
			r.stats.Retransmitted++
			return
		}
		payload, seq = payload[d:], f.next
	}
	if seq != f.next {
		f.ooo = append(f.ooo, segment{seq, append([]byte(nil), payload...)})
	} else {
		f.buf = append(f.buf, payload...)
		f.next += uint32(len(payload))
	}
	// Drain what now follows in order; skip the oldest gap when too much
	// waits behind it (the bytes were never captured).
	for {
		progressed := false
		for i := 0; i < len(f.ooo); i++ {
			s := f.ooo[i]
			d := int32(f.next - s.seq)
			switch {
			case d >= 0 && int(d) >= len(s.data): // wholly seen
			case d >= 0:
				f.buf = append(f.buf, s.data[d:]...)
				f.next += uint32(len(s.data) - int(d))
			default:
				continue
			}
			f.ooo = append(f.ooo[:i], f.ooo[i+1:]...)
			i--
			progressed = true
		}
		if progressed {
			continue
		}
		waiting := 0
		for _, s := range f.ooo {
			waiting += len(s.data)
		}
		if len(f.ooo) == 0 || waiting+len(f.buf) <= MaxBuffered {
			return
		}
		first := f.ooo[0].seq
		for _, s := range f.ooo {
			if int32(s.seq-first) < 0 {
				first = s.seq
			}
		}
		r.stats.GapBytes += uint64(first - f.next)
		// The message in progress lost its middle: drop it, and find
		// the next message start after the gap.
		r.stats.DiscardedBytes += uint64(len(f.buf))
		f.buf = f.buf[:0]
		f.next = first
	}
}

var (
	headerEnd = []byte("\r\n\r\n")
	sipVer    = []byte("SIP/2.0")
)

// frame delivers every complete message at the start of f.buf.
func (r *Reassembler) frame(f *flow, fn func([]byte)) {
	for len(f.buf) > 0 {
		// Keep-alives (RFC 5626 §3.5.1) between messages.
		if f.buf[0] == '\r' || f.buf[0] == '\n' {
			n := 0
			for n < len(f.buf) && (f.buf[n] == '\r' || f.buf[n] == '\n') {
				n++
			}
			r.stats.KeepAlives++
			f.buf = f.buf[:copy(f.buf, f.buf[n:])]
			continue
		}
		end := bytes.Index(f.buf, headerEnd)
		if end < 0 {
			if len(f.buf) > MaxMessage {
				r.resync(f)
				continue
			}
			return
		}
		line, _, _ := bytes.Cut(f.buf[:end], []byte("\r\n"))
		if !bytes.Contains(line, sipVer) {
			r.resync(f)
			continue
		}
		n, ok := contentLength(f.buf[:end+2])
		if !ok || n > MaxMessage {
			r.resync(f)
			continue
		}
		total := end + len(headerEnd) + n
		if len(f.buf) < total {
			return
		}
		r.stats.Messages++
		fn(f.buf[:total])
		f.buf = f.buf[:copy(f.buf, f.buf[total:])]
	}
}

// resync drops bytes up to the next line that starts a SIP message.
func (r *Reassembler) resync(f *flow) {
	i := 1
	for ; i < len(f.buf); i++ {
		if f.buf[i-1] == '\n' && looksLikeStart(f.buf[i:]) {
			break
		}
	}
	r.stats.DiscardedBytes += uint64(i)
	f.buf = f.buf[:copy(f.buf, f.buf[i:])]
}

func looksLikeStart(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return bytes.HasPrefix(line, sipVer) || bytes.HasSuffix(line, sipVer)
}

// contentLength finds Content-Length (or its compact form "l") in the
// header block; a stream message without one is malformed (RFC 3261
// §18.3) unless it has no body, which is what 0 means here too.
func contentLength(hdr []byte) (int, bool) {
	for len(hdr) > 0 {
		var line []byte
		line, hdr, _ = bytes.Cut(hdr, []byte("\r\n"))
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Content-Length")) || bytes.EqualFold(name, []byte("l")) {
			n, err := strconv.Atoi(string(bytes.TrimSpace(val)))
			return n, err == nil && n >= 0
		}
	}
	return 0, true
}

// Expire forgets directions idle since before.
func (r *Reassembler) Expire(before time.Time) {
	for k, f := range r.flows {
		if f.last.Before(before) {
			delete(r.flows, k)
		}
	}
}
