package processors

import (
	"encoding/binary"
	"time"
)

// RFC 4733 telephone-events: the digits a caller keyed, found in the
// stream's event packets. Each event is sent several times (its start,
// updates, and three end packets) under one RTP timestamp.

// dtmfDigits maps event codes 0 to 15 to their keys.
const dtmfDigits = "0123456789*#ABCD"

type dtmfEvent struct {
	ts       uint32 // RTP timestamp of the event's start
	digit    byte
	at       time.Time // arrival of its first packet
	duration uint32    // in timestamp units, as last reported
}

// dtmfTrack collects one stream's events.
type dtmfTrack struct {
	events []dtmfEvent
}

// add takes one telephone-event payload (4 bytes: event, E/R/volume,
// duration) sent with RTP timestamp ts, and reports whether it started a
// new event. Payloads that are not an RFC 4733 DTMF event are ignored.
func (d *dtmfTrack) add(ts uint32, payload []byte, at time.Time) bool {
	if len(payload) < 4 || payload[0] > 15 {
		return false
	}
	dur := uint32(binary.BigEndian.Uint16(payload[2:]))
	for i := len(d.events) - 1; i >= 0 && i >= len(d.events)-4; i-- {
		if d.events[i].ts == ts { // an update or a repeated end packet
			d.events[i].duration = max(d.events[i].duration, dur)
			return false
		}
	}
	d.events = append(d.events, dtmfEvent{ts: ts, digit: dtmfDigits[payload[0]], at: at, duration: dur})
	return true
}

// maskGuard widens each event's range for masking: tones start before the
// first event packet and ring after the last (40 ms at 8 kHz).
const maskGuard = 320

// masked reports whether [ts, ts+n) overlaps an event, guard included.
func (d *dtmfTrack) masked(ts uint32, n int) bool {
	for _, e := range d.events {
		start := e.ts - maskGuard
		end := e.ts + max(e.duration, 800) + maskGuard // at least 100 ms
		if int32(ts+uint32(n)-start) > 0 && int32(end-ts) > 0 {
			return true
		}
	}
	return false
}
