package oggopus_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/verbatimrec/verbatim/processors/internal/oggopus"
)

type page struct {
	flags   byte
	granule uint64
	seq     uint32
	packet  []byte
}

// readPages parses Ogg pages and checks each one's CRC.
func readPages(t *testing.T, b []byte) []page {
	t.Helper()
	var out []page
	for len(b) > 0 {
		if len(b) < 27 || string(b[:4]) != "OggS" {
			t.Fatalf("not an Ogg page at %d bytes before the end", len(b))
		}
		n := int(b[26])
		size := 27 + n
		for _, l := range b[27 : 27+n] {
			size += int(l)
		}
		pg := bytes.Clone(b[:size])
		crc := binary.LittleEndian.Uint32(pg[22:])
		binary.LittleEndian.PutUint32(pg[22:], 0)
		if oggopus.Checksum(pg) != crc {
			t.Fatalf("page %d: bad CRC", len(out))
		}
		out = append(out, page{flags: b[5], granule: binary.LittleEndian.Uint64(b[6:]), seq: binary.LittleEndian.Uint32(b[18:]), packet: b[27+n : size]})
		b = b[size:]
	}
	return out
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w, err := oggopus.NewWriter(&buf, 42, 2)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{0x78}, 600) // laced over 3 segments
	for i, p := range [][]byte{{0x78, 1}, big, {0x78, 3}} {
		if err := w.WritePacket(p, uint64(960*(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	pages := readPages(t, buf.Bytes())
	if len(pages) != 5 || string(pages[0].packet[:8]) != "OpusHead" || pages[0].flags != 2 || string(pages[1].packet[:8]) != "OpusTags" {
		t.Fatalf("headers: %d pages", len(pages))
	}
	if pages[0].packet[9] != 2 || binary.LittleEndian.Uint32(pages[0].packet[12:]) != 48000 {
		t.Fatalf("OpusHead %x", pages[0].packet)
	}
	if !bytes.Equal(pages[3].packet, big) || pages[4].flags != 4 || pages[4].granule != 2880 || pages[4].seq != 4 {
		t.Fatalf("audio pages: %+v", pages[2:])
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		p    []byte
		want int
	}{
		{[]byte{0x78}, 960},        // config 15 (hybrid 20 ms), one frame
		{[]byte{0xfc}, 960},        // config 31 (CELT 20 ms)
		{[]byte{0x0b}, 0},          // config 1 (SILK 20 ms), code 3 without its frame count
		{[]byte{0x0b, 0x03}, 2880}, // 3 frames of 20 ms
		{nil, 0},
	} {
		if got := oggopus.Duration(c.p); got != c.want {
			t.Errorf("Duration(%x) = %d, want %d", c.p, got, c.want)
		}
	}
}
