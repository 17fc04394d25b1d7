package pcapread

import (
	"errors"
	"net/netip"
	"slices"
	"time"
)

// IPv6 reassembly (RFC 8200 section 4.5). gopacket reassembles IPv4 only.
// A datagram is identified by source, destination and the Fragment
// header's identification. Overlapping fragments discard the whole
// datagram (RFC 5722); an exact duplicate (a retransmitted frame seen
// twice on a mirror port) is ignored.

// Limits that bound the memory a flood of fragments can take.
const (
	maxIPv6Datagrams = 1024  // datagrams in reassembly at once
	maxIPv6Length    = 65535 // a reassembled payload, without a jumbogram
)

var (
	errFragOverlap  = errors.New("IPv6 fragments overlap (RFC 5722): datagram discarded")
	errFragTooLong  = errors.New("IPv6 fragment beyond 65,535 bytes")
	errFragAlign    = errors.New("IPv6 fragment that is not the last is not a multiple of 8 bytes")
	errFragConflict = errors.New("IPv6 fragments disagree on the datagram's length")
	errFragTooMany  = errors.New("too many IPv6 datagrams in reassembly: fragment dropped")
	errFragEmpty    = errors.New("IPv6 fragment without data")
)

type frag6Key struct {
	src, dst netip.Addr
	id       uint32
}

type frag6Part struct {
	off  int
	data []byte
}

type frag6Set struct {
	first     time.Time
	proto     uint8 // upper layer, from the first fragment's Fragment header
	haveFirst bool
	total     int // payload length, once the last fragment came; -1 before
	parts     []frag6Part
	size      int
}

type ip6Defrag struct {
	sets map[frag6Key]*frag6Set
}

// add keeps one fragment (data is copied) of datagram k: offset in bytes,
// whether more follow, and the next header its Fragment header names.
// When the datagram is complete it returns its payload and upper-layer
// protocol. An error means the fragment, or its whole datagram, was
// dropped; lost is how many datagrams that gave up.
func (d *ip6Defrag) add(k frag6Key, off int, more bool, next uint8, data []byte, at time.Time) (payload []byte, proto uint8, lost int, err error) {
	if len(data) == 0 {
		return nil, 0, 0, errFragEmpty
	}
	if off+len(data) > maxIPv6Length {
		return nil, 0, 0, errFragTooLong
	}
	if more && len(data)%8 != 0 {
		return nil, 0, 0, errFragAlign
	}
	s := d.sets[k]
	if s == nil {
		if d.sets == nil {
			d.sets = map[frag6Key]*frag6Set{}
		}
		if len(d.sets) >= maxIPv6Datagrams {
			return nil, 0, 1, errFragTooMany
		}
		s = &frag6Set{first: at, total: -1}
		d.sets[k] = s
	}
	end := off + len(data)
	i, _ := slices.BinarySearchFunc(s.parts, off, func(p frag6Part, off int) int { return p.off - off })
	if i < len(s.parts) && s.parts[i].off == off && string(s.parts[i].data) == string(data) {
		return nil, 0, 0, nil // the same fragment seen again
	}
	if (i > 0 && s.parts[i-1].off+len(s.parts[i-1].data) > off) || (i < len(s.parts) && s.parts[i].off < end) {
		delete(d.sets, k)
		return nil, 0, 1, errFragOverlap
	}
	if !more {
		if s.total >= 0 && s.total != end {
			delete(d.sets, k)
			return nil, 0, 1, errFragConflict
		}
		s.total = end
	}
	if s.total >= 0 && end > s.total {
		delete(d.sets, k)
		return nil, 0, 1, errFragConflict
	}
	if off == 0 {
		s.proto, s.haveFirst = next, true
	}
	s.parts = slices.Insert(s.parts, i, frag6Part{off: off, data: append([]byte(nil), data...)})
	s.size += len(data)
	if !s.haveFirst || s.total < 0 || s.size != s.total {
		return nil, 0, 0, nil
	}
	// No overlaps, all within [0, total), and as many bytes as total:
	// the parts tile the datagram.
	payload = make([]byte, 0, s.total)
	for _, p := range s.parts {
		payload = append(payload, p.data...)
	}
	delete(d.sets, k)
	return payload, s.proto, 0, nil
}

// discardOlderThan gives up the datagrams whose first fragment came before
// t, and returns how many.
func (d *ip6Defrag) discardOlderThan(t time.Time) int {
	n := 0
	for k, s := range d.sets {
		if s.first.Before(t) {
			delete(d.sets, k)
			n++
		}
	}
	return n
}
