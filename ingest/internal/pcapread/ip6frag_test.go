package pcapread

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// FuzzIPv6Defrag feeds arbitrary fragment sequences (offset, more flag,
// identification, length per fragment) to the IPv6 reassembler: it must
// never panic, never hold more than its limit, and every datagram it
// returns must be exactly as long as the fragments that made it.
func FuzzIPv6Defrag(f *testing.F) {
	f.Add([]byte{0, 1, 0, 180, 1, 1, 0, 180, 2, 0, 0, 20})
	f.Add([]byte{0, 1, 0, 180, 0, 1, 0, 180, 1, 0, 0, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d ip6Defrag
		src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
		data := make([]byte, 256*8+64)
		at := time.Unix(1_700_000_000, 0)
		accepted := map[uint32]map[int]int{} // per datagram: offset -> length
		for ; len(b) >= 4; b = b[4:] {
			off, more, id, n := int(b[0])*8, b[1]&1 == 1, uint32(b[2]&3), int(b[3])*8
			if !more {
				n += int(b[1]) >> 2 // a last fragment of any length
			}
			payload, _, _, err := d.add(frag6Key{src, dst, id}, off, more, 17, data[:n], at)
			if len(d.sets) > maxIPv6Datagrams {
				t.Fatalf("%d datagrams held", len(d.sets))
			}
			switch {
			case errors.Is(err, errFragOverlap), errors.Is(err, errFragConflict):
				delete(accepted, id) // the datagram was discarded
			case err != nil: // the fragment alone was dropped
			case payload != nil:
				sum := n
				for _, l := range accepted[id] {
					sum += l
				}
				if len(payload) != sum || len(payload) > maxIPv6Length {
					t.Fatalf("reassembled %d bytes from fragments of %d", len(payload), sum)
				}
				delete(accepted, id)
			default:
				if accepted[id] == nil {
					accepted[id] = map[int]int{}
				}
				accepted[id][off] = n // a duplicate sets the same
			}
		}
		d.discardOlderThan(at.Add(time.Second))
		if len(d.sets) != 0 {
			t.Fatalf("%d datagrams left after the sweep", len(d.sets))
		}
	})
}
