package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// TestIngestProjectSearch is the user journey so far: captures in, calls
// found by search, against the local stack's ClickHouse and an embedded
// broker.
func TestIngestProjectSearch(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	db := fmt.Sprintf("verbatim_e2e_%d", time.Now().UnixNano())

	cmd := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(ctx, args, &out, &errb); err != nil {
			t.Fatalf("verbatim %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String()
	}
	objects := filepath.Join(t.TempDir(), "objects")
	cmd("topics", "--create", "--brokers", brokers)
	out := cmd("ingest", "pcap", "--brokers", brokers, "--keyring", keyring,
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"), stacktest.SharedTestdata(t, "pcap/wireshark_SIP_DTMF2.cap"))
	t.Log("\n" + out)
	out = cmd("process", "--brokers", brokers, "--keyring", keyring, "--objects", objects, "--spool", t.TempDir(),
		"--exit-when-idle", "2s", "--quiet")
	t.Log(out)
	if !strings.Contains(out, "3 recordings stored") {
		t.Fatalf("process: %s", out)
	}
	out = cmd("project", "search", "--brokers", brokers, "--keyring", keyring, "--database", db, "--exit-when-idle", "3s")
	t.Log(out)
	defer func() {
		if conn, _, err := (chFlags{addr: ptr(stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")), db: &db}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
			conn.Close()
		}
	}()

	find := func(args ...string) []search.Result {
		t.Helper()
		var rs []search.Result
		if err := json.Unmarshal([]byte(cmd(append([]string{"search", "--json", "--database", db}, args...)...)), &rs); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if rs := find(); len(rs) != 4 {
		t.Fatalf("%d calls found, want 4 (2 per capture)", len(rs))
	}
	rs := find("--call-id", "1-1966@10.0.2.20")
	if len(rs) != 1 || rs[0].EndReason != "END_REASON_BYE" || rs[0].Duration < 8*time.Second || rs[0].Duration > 9*time.Second ||
		rs[0].StartedAt.Format("2006-01-02") != "2016-11-26" || len(rs[0].Parties) != 2 || rs[0].Parties[0].URI != "sip:test@10.0.2.15:5060" {
		t.Fatalf("1-1966: %+v", rs)
	}
	if rs := find("--party", "sip:sipp@10.0.2.20:5060"); len(rs) != 2 {
		t.Fatalf("by caller URI: %d calls", len(rs))
	}
	// SIP_DTMF2: no BYE; the dialog runs from the 200 OK (12:03:19.658)
	// to the last RTP packet (12:04:02.160), as tshark shows.
	rs = find("--call-id", "25672@192.168.105.110")
	if len(rs) != 1 || rs[0].EndReason != "END_REASON_TIMEOUT" || rs[0].StartedAt.UTC().Format(time.RFC3339) != "2005-09-09T12:03:17Z" ||
		(rs[0].Duration-42502*time.Millisecond).Abs() > time.Second || len(rs[0].Parties) != 2 ||
		rs[0].Parties[0].URI != "sip:2504@192.168.105.105" || rs[0].Parties[1].URI != "sip:2502@192.168.105.105" {
		t.Fatalf("25672: %+v", rs)
	}
	if rs := find("--call-id", "5514@192.168.105.110"); len(rs) != 1 || rs[0].EndReason != "END_REASON_REJECTED" {
		t.Fatalf("declined call: %+v", rs)
	}
	if rs := find("--tenant", "acme"); len(rs) != 0 {
		t.Fatalf("another tenant sees %d calls", len(rs))
	}
	// Completeness: the lossless calls are complete; the declined call had
	// nothing to record; none is silently absent.
	for _, r := range find() {
		switch {
		case r.SIPCallID == "1-1966@10.0.2.20" || r.SIPCallID == "1-1968@10.0.2.20":
			if r.Status != search.StatusRecorded || r.Recording.PacketsMissing != 0 || r.Recording.PacketsInRecording < 414 {
				t.Errorf("%s: %s %+v", r.SIPCallID, r.Status, r.Recording)
			}
		case r.EndReason == "END_REASON_REJECTED":
			if r.Status != search.StatusNotAnswered {
				t.Errorf("%s: %s", r.SIPCallID, r.Status)
			}
		default:
			if r.Status != search.StatusRecorded {
				t.Errorf("%s: %s", r.SIPCallID, r.Status)
			}
		}
	}

	// Playback: each channel equals tshark's export of the stream's RTP
	// payloads, decoded by sox, sample for sample.
	// SIP_DTMF2's second direction (SSRC 0x9A7B5382) is sent to an address
	// neither SDP names, so it is not matched yet (issue 4, NAT'd media).
	for _, c := range []struct {
		capture, callID, codec string
		ssrc                   uint32
		pt                     int
	}{
		{"pcap/wireshark_sip-rtp-g711.pcap", "1-1966@10.0.2.20", "ul", 0x343DA99B, 0},
		{"pcap/wireshark_sip-rtp-g711.pcap", "1-1968@10.0.2.20", "al", 0x343FFA34, 8},
		{"pcap/wireshark_SIP_DTMF2.cap", "25672@192.168.105.110", "al", 0x5711BF84, 8}, // 30 ms frames, DTMF events between
	} {
		wavPath := filepath.Join(t.TempDir(), "call.wav")
		out := cmd("play", c.callID, "-o", wavPath, "--database", db, "--brokers", brokers, "--keyring", keyring, "--objects", objects)
		if !strings.Contains(out, "verified") {
			t.Fatalf("play: %s", out)
		}
		wav, err := os.ReadFile(wavPath)
		if err != nil {
			t.Fatal(err)
		}
		// sox reads the header as a WAV player would.
		if info, err := exec.Command("soxi", wavPath).CombinedOutput(); err != nil ||
			!strings.Contains(string(info), "Channels       : 2") || !strings.Contains(string(info), "Sample Rate    : 8000") {
			t.Fatalf("soxi: %v\n%s", err, info)
		}
		left, right := wavChannels(t, wav)
		want := tsharkSox(t, stacktest.SharedTestdata(t, c.capture), c.ssrc, c.pt, c.codec)
		got, other := left, right
		if !silent(right) {
			got, other = right, left
		}
		if !silent(other) {
			t.Errorf("%s: both channels have sound, but only one direction is recorded", c.callID)
		}
		at := containsAt(got, want)
		if at < 0 || !silent(got[:at]) || !silent(got[at+len(want):]) {
			t.Fatalf("%s: channel (%d samples) does not hold tshark+sox's %d samples (found at %d)", c.callID, len(got), len(want), at)
		}
		t.Logf("%s: %d samples equal tshark's export decoded by sox, from sample %d", c.callID, len(want), at)
	}
	if _, err := runOut(ctx, "play", "1-1966@10.0.2.20", "-o", filepath.Join(t.TempDir(), "x.wav"), "--tenant", "acme",
		"--database", db, "--brokers", brokers, "--keyring", keyring, "--objects", objects); err == nil || !strings.Contains(err.Error(), "no call") {
		t.Fatalf("another tenant plays the call: %v", err)
	}

	table := cmd("search", "--database", db, "--party", "2504")
	if !strings.Contains(table, "25672@192.168.105.110") || !strings.Contains(table, "2 calls") {
		t.Fatalf("table output:\n%s", table)
	}
	t.Log("\n" + table)
}

func ptr[T any](v T) *T { return &v }

func runOut(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	return out.String() + errb.String(), err
}

func wavChannels(t *testing.T, wav []byte) (l, r []int16) {
	t.Helper()
	if len(wav) < 44 || string(wav[:4]) != "RIFF" || binary.LittleEndian.Uint16(wav[22:]) != 2 || binary.LittleEndian.Uint32(wav[24:]) != 8000 {
		t.Fatalf("not an 8 kHz stereo WAV")
	}
	for o := 44; o+4 <= len(wav); o += 4 {
		l = append(l, int16(binary.LittleEndian.Uint16(wav[o:])))
		r = append(r, int16(binary.LittleEndian.Uint16(wav[o+2:])))
	}
	return l, r
}

func silent(s []int16) bool {
	return !slices.ContainsFunc(s, func(v int16) bool { return v != 0 })
}

// tsharkSox exports one stream's RTP payloads of payload type pt with
// tshark, decodes them with sox (codec "ul" or "al") to 16-bit samples and
// places each packet's samples at its RTP timestamp, silence between: a
// reference made entirely by other people's code.
func tsharkSox(t *testing.T, pcap string, ssrc uint32, pt int, codec string) []int16 {
	t.Helper()
	out, err := exec.Command("tshark", "-r", pcap, "-o", "rtp.heuristic_rtp:TRUE",
		"-Y", fmt.Sprintf("rtp.ssrc == 0x%08x && rtp.p_type == %d", ssrc, pt),
		"-T", "fields", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.payload").Output()
	if err != nil {
		t.Fatalf("tshark (make test installs it): %v", err)
	}
	type pkt struct {
		seq, ts int
		payload []byte
	}
	var pkts []pkt
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			t.Fatalf("tshark line %q", line)
		}
		seq, err1 := strconv.Atoi(f[0])
		ts, err2 := strconv.Atoi(f[1])
		b, err3 := hex.DecodeString(strings.ReplaceAll(f[2], ":", ""))
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("tshark line %q", line)
		}
		pkts = append(pkts, pkt{seq, ts, b})
	}
	slices.SortStableFunc(pkts, func(a, b pkt) int { return a.seq - b.seq }) // no wrap in these streams
	var raw []byte
	for _, p := range pkts {
		raw = append(raw, p.payload...)
	}
	dir := t.TempDir()
	in, outPath := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.raw")
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("sox", "-t", codec, "-r", "8000", "-c", "1", in, "-t", "raw", "-e", "signed", "-b", "16", "-L", outPath).CombinedOutput(); err != nil {
		t.Fatalf("sox (make test installs it): %v: %s", err, b)
	}
	pcm, err := os.ReadFile(outPath)
	if err != nil || len(pcm) != 2*len(raw) {
		t.Fatalf("sox output: %d bytes for %d samples (%v)", len(pcm), len(raw), err)
	}
	last := pkts[len(pkts)-1]
	s := make([]int16, last.ts-pkts[0].ts+len(last.payload))
	i := 0
	for _, p := range pkts {
		for j := range p.payload {
			s[p.ts-pkts[0].ts+j] = int16(binary.LittleEndian.Uint16(pcm[2*(i+j):]))
		}
		i += len(p.payload)
	}
	t.Logf("tshark: %d packets of SSRC 0x%08x, PT %d, %d bytes of payload over %d samples", len(pkts), ssrc, pt, len(raw), len(s))
	return s
}

// containsAt returns where want occurs in got, sample for sample, or -1.
func containsAt(got, want []int16) int {
	g, w := pcmLE(got), pcmLE(want)
	for from := 0; ; {
		i := bytes.Index(g[from:], w)
		if i < 0 {
			return -1
		}
		if (from+i)%2 == 0 {
			return (from + i) / 2
		}
		from += i + 1
	}
}

func pcmLE(s []int16) []byte {
	b := make([]byte, 0, 2*len(s))
	for _, v := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}
