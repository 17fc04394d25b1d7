// Package wav writes 16-bit PCM WAV recordings, stereo with the caller on
// the left and the callee on the right, aligned by arrival time. The Mixer
// interleaves two channels as they are assembled without holding a whole
// call: each channel queues at most MaxLag samples ahead of the other.
package wav

import (
	"encoding/binary"
	"io"
	"time"
)

// HeaderSize is the size of the canonical 44-byte WAV header.
const HeaderSize = 44

// Header returns the RIFF/WAVE header of 16-bit PCM with the given channel
// count, sample rate and data size in bytes.
func Header(channels, rate int, dataBytes uint32) [HeaderSize]byte {
	var h [HeaderSize]byte
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+dataBytes)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:], uint16(channels))
	binary.LittleEndian.PutUint32(h[24:], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(rate*channels*2))
	binary.LittleEndian.PutUint16(h[32:], uint16(channels*2))
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], dataBytes)
	return h
}

// Mixer interleaves two mono channels into stereo frames written to W.
type Mixer struct {
	w      io.Writer
	rate   int
	maxLag int
	t0     time.Time
	clock  time.Time // the latest arrival written (Arrived)
	// maxQueue bounds the samples a channel queues for the other: 60 s.
	maxQueue int
	ch       [2]channel
	out      []byte
	frames   int64
	err      error
}

type channel struct {
	queue   []int16
	pos     int64 // samples accepted so far, padding included
	started bool
}

// NewMixer returns a Mixer at rate samples per second whose timeline starts
// at t0 (the call's first media arrival). maxLag bounds how far one channel
// may run ahead before the other is taken to be silent; 0 means 2 s.
func NewMixer(w io.Writer, rate int, t0 time.Time, maxLag time.Duration) *Mixer {
	if maxLag <= 0 {
		maxLag = 2 * time.Second
	}
	lag := int(maxLag.Seconds() * float64(rate))
	return &Mixer{w: w, rate: rate, t0: t0, maxLag: lag, maxQueue: 60 * rate, out: make([]byte, 0, 4*1024)}
}

// Start aligns channel c (0 left, 1 right) to its first packet's arrival
// time, padding it with silence from t0. Call it before the channel's first
// Write; later calls do nothing.
func (m *Mixer) Start(c int, arrival time.Time) {
	ch := &m.ch[c]
	if ch.started {
		return
	}
	ch.started = true
	if target := int64(arrival.Sub(m.t0).Seconds() * float64(m.rate)); target > ch.pos {
		m.pad(c, target-ch.pos)
	}
}

// Align pads channel c with silence up to arrival, if it is behind: a new
// source on the channel starts where it arrives.
func (m *Mixer) Align(c int, arrival time.Time) {
	ch := &m.ch[c]
	if target := int64(arrival.Sub(m.t0).Seconds() * float64(m.rate)); target > ch.pos {
		m.pad(c, target-ch.pos)
	}
}

func (m *Mixer) pad(c int, n int64) {
	ch := &m.ch[c]
	for ; n > 0; n-- {
		ch.queue = append(ch.queue, 0)
		ch.pos++
	}
}

// Write queues samples for channel c and writes every complete frame.
func (m *Mixer) Write(c int, samples []int16) error {
	ch := &m.ch[c]
	ch.queue = append(ch.queue, samples...)
	ch.pos += int64(len(samples))
	// The other channel is silent if it has fallen maxLag behind, in
	// samples and in arrival time: media that came faster than it plays
	// (an SRC catching up, a replay) has batches of each channel longer
	// than maxLag, and the other channel's next batch is not late. A
	// queue past maxQueue is written out regardless: memory is bounded.
	o := &m.ch[1-c]
	behind := ch.pos - o.pos - int64(m.maxLag)
	if !m.clock.IsZero() && len(ch.queue) < m.maxQueue {
		behind = min(behind, int64(m.clock.Sub(m.t0).Seconds()*float64(m.rate))-int64(m.maxLag)-o.pos)
	}
	if behind > 0 {
		m.pad(1-c, behind)
	}
	return m.flush(false)
}

// Arrived says media that arrived at t is being written: a channel is
// taken to be silent only up to maxLag before the latest arrival.
func (m *Mixer) Arrived(t time.Time) {
	if t.After(m.clock) {
		m.clock = t
	}
}

// flush writes the frames both channels have; at the end, the shorter
// channel is padded.
func (m *Mixer) flush(final bool) error {
	if m.err != nil {
		return m.err
	}
	l, r := &m.ch[0], &m.ch[1]
	if final {
		for len(l.queue) < len(r.queue) {
			l.queue = append(l.queue, 0)
		}
		for len(r.queue) < len(l.queue) {
			r.queue = append(r.queue, 0)
		}
	}
	n := min(len(l.queue), len(r.queue))
	for i := 0; i < n; {
		// Frames go straight into the free part of out, 4 bytes each.
		k := min(n-i, (cap(m.out)-len(m.out))/4)
		o := len(m.out)
		m.out = m.out[:o+4*k]
		for j := range k {
			binary.LittleEndian.PutUint16(m.out[o+4*j:], uint16(l.queue[i+j]))
			binary.LittleEndian.PutUint16(m.out[o+4*j+2:], uint16(r.queue[i+j]))
		}
		i += k
		if len(m.out) > cap(m.out)-4 {
			if _, m.err = m.w.Write(m.out); m.err != nil {
				return m.err
			}
			m.out = m.out[:0]
		}
	}
	m.frames += int64(n)
	l.queue = append(l.queue[:0], l.queue[n:]...)
	r.queue = append(r.queue[:0], r.queue[n:]...)
	if final && len(m.out) > 0 {
		_, m.err = m.w.Write(m.out)
		m.out = m.out[:0]
	}
	return m.err
}

// Close pads the shorter channel, writes the remaining frames and returns
// the number of stereo frames written.
func (m *Mixer) Close() (frames int64, err error) {
	err = m.flush(true)
	return m.frames, err
}
