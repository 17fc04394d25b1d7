package ingest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
)

type rtpStream struct {
	packets     int
	pt          int
	first, last time.Time
}

// tsharkStreams reads every RTP stream tshark finds in a capture (its RTP
// heuristic on), by SSRC, and the Call-IDs of the INVITEs it decodes.
func tsharkStreams(t *testing.T, file string) (map[uint32]*rtpStream, map[string]bool) {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp && !rtcp && !icmp", // not the copies ICMP errors quote
		"-T", "fields", "-e", "rtp.ssrc", "-e", "rtp.p_type", "-e", "frame.time_epoch").Output()
	if err != nil {
		t.Fatalf("tshark (make test installs it): %v", err)
	}
	streams := map[uint32]*rtpStream{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || f[0] == "" {
			continue
		}
		ssrc, err1 := strconv.ParseUint(strings.TrimPrefix(f[0], "0x"), 16, 32)
		pt, err2 := strconv.Atoi(strings.Split(f[1], ",")[0])
		sec, err3 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("tshark line %q", line)
		}
		at := time.Unix(0, int64(sec*1e9))
		s := streams[uint32(ssrc)]
		if s == nil {
			s = &rtpStream{pt: pt, first: at}
			streams[uint32(ssrc)] = s
		}
		s.packets++
		s.last = at
	}
	out, err = exec.Command("tshark", "-r", file, "-Y", `sip.Method == "INVITE"`, "-T", "fields", "-e", "sip.Call-ID").Output()
	if err != nil {
		t.Fatal(err)
	}
	invites := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		invites[id] = true
	}
	return streams, invites
}

// TestEveryCaptureMatchesTshark records every capture in the shared
// testdata and compares, stream by stream (SSRC), what was recorded with
// what tshark reports for the same file: packet counts, payload type,
// first and last packet times; and the number of SIP calls with the
// INVITEs tshark decodes. Media no dialog describes is recorded as calls
// of its own, so every stream tshark sees is recorded.
func TestEveryCaptureMatchesTshark(t *testing.T) {
	stacktest.Env(t, "VERBATIM_INTEGRATION")
	files, _ := filepath.Glob(filepath.Join(stacktest.SharedTestdata(t, "pcap"), "*"))
	files = append(files, stacktest.SharedTestdata(t, "srtp/marseillaise-srtp.pcap"))
	sort.Strings(files)
	for _, file := range files {
		name := filepath.Base(file)
		want, invites := tsharkStreams(t, file)
		rep, out := ingestFile(t, "", mustRead(t, file))
		got := map[uint32]*rtpStream{}
		for _, bs := range out.batches {
			for _, b := range bs {
				s := got[b.GetSsrc()]
				first := time.Unix(0, b.GetFirstArrivalUnixNano())
				offs := b.GetArrivalOffsetsUs()
				last := first.Add(time.Duration(offs[len(offs)-1]) * time.Microsecond)
				if s == nil {
					s = &rtpStream{pt: int(b.GetPayloadType()), first: first}
					got[b.GetSsrc()] = s
				}
				s.packets += int(b.GetPacketCount())
				if first.Before(s.first) {
					s.first = first
				}
				if last.After(s.last) {
					s.last = last
				}
			}
		}
		for ssrc, w := range want {
			g := got[ssrc]
			switch {
			case g == nil:
				t.Errorf("%s: SSRC 0x%08x (%d packets, PT %d) not recorded", name, ssrc, w.packets, w.pt)
			case g.packets != w.packets || g.pt != w.pt:
				t.Errorf("%s: SSRC 0x%08x: recorded %d packets, PT %d; tshark %d, PT %d", name, ssrc, g.packets, g.pt, w.packets, w.pt)
			case g.first.Sub(w.first).Abs() > time.Millisecond || g.last.Sub(w.last).Abs() > time.Millisecond:
				t.Errorf("%s: SSRC 0x%08x: recorded %v to %v; tshark %v to %v", name, ssrc, g.first, g.last, w.first, w.last)
			}
		}
		for ssrc, g := range got {
			if want[ssrc] == nil {
				t.Errorf("%s: recorded SSRC 0x%08x (%d packets) that tshark does not see as RTP", name, ssrc, g.packets)
			}
		}
		if sipCalls := rep.Calls - rep.RTPOnlyCalls; sipCalls != len(invites) {
			t.Errorf("%s: %d SIP calls recorded, tshark decodes %d INVITE Call-IDs", name, sipCalls, len(invites))
		}
		t.Logf("%-40s %d SIP calls, %d calls found by RTP, %d streams as tshark sees them", name, rep.Calls-rep.RTPOnlyCalls, rep.RTPOnlyCalls, len(want))
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
