package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
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
	"github.com/verbatimrec/verbatim/schemas"
)

// TestIngestProjectSearch is the user journey so far: captures in, calls
// found by search, against the local stack's ClickHouse and an embedded
// broker.
func TestIngestProjectSearch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "e2e")
	brokers, keyring, objects, db, cmd := e.brokers, e.keyring, e.objects, e.db, e.cmd
	out := cmd("ingest", "pcap", "--brokers", brokers, "--keyring", keyring,
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"), stacktest.SharedTestdata(t, "pcap/wireshark_SIP_DTMF2.cap"),
		stacktest.SharedTestdata(t, "pcap/audiocodes_sip-over-tcp.pcap"), stacktest.SharedTestdata(t, "pcap/metaswitch_09a_2833_dtmf.pcap"),
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-opus.pcap"), stacktest.SharedTestdata(t, "pcap/miarec_siprec_dual_channel_udp.pcap"))
	t.Log("\n" + out)
	out = cmd("process", "--brokers", brokers, "--keyring", keyring, "--objects", objects, "--spool", t.TempDir(),
		"--exit-when-idle", "--quiet")
	t.Log(out)
	if !strings.Contains(out, "9 recordings stored") {
		t.Fatalf("process: %s", out)
	}
	out = cmd("project", "search", "--brokers", brokers, "--keyring", keyring, "--database", db, "--exit-when-idle")
	t.Log(out)

	find := func(args ...string) []search.Result {
		t.Helper()
		var rs []search.Result
		if err := json.Unmarshal([]byte(cmd(append([]string{"search", "--json", "--database", db}, args...)...)), &rs); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if rs := find(); len(rs) != 10 {
		t.Fatalf("%d calls found, want 10 (2 per SIP/UDP G.711 capture, 1 Opus, 1 over TCP, 4 found by their RTP alone)", len(rs))
	}
	rs := find("--call-id", "1-1966@10.0.2.20")
	if len(rs) != 1 || rs[0].EndReason != "END_REASON_BYE" || rs[0].Duration < 8*time.Second || rs[0].Duration > 9*time.Second ||
		rs[0].StartedAt.Format("2006-01-02") != "2016-11-26" || len(rs[0].Parties) != 2 || rs[0].Parties[0].URI != "sip:test@10.0.2.15:5060" {
		t.Fatalf("1-1966: %+v", rs)
	}
	if rs := find("--party", "sip:sipp@10.0.2.20:5060"); len(rs) != 3 { // the two G.711 calls and the Opus one
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
			if c := r.Recording.Completeness; r.Status != search.StatusRecorded || c == nil || c.Status != schemas.StatusComplete || c.AudioRecorded < 414 {
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
	// neither SDP names: it is recorded, as a call found by its RTP, until
	// NAT'd media is matched to its dialog (issue 4).
	for _, c := range []struct {
		capture, call string // call: SIP Call-ID, or a party for a call found by its RTP
		refs          []streamRef
	}{
		{"pcap/wireshark_sip-rtp-g711.pcap", "1-1966@10.0.2.20", []streamRef{{0x343DA99B, 0, "ul"}}},
		{"pcap/wireshark_sip-rtp-g711.pcap", "1-1968@10.0.2.20", []streamRef{{0x343FFA34, 8, "al"}}},
		{"pcap/wireshark_SIP_DTMF2.cap", "25672@192.168.105.110", []streamRef{{0x5711BF84, 8, "al"}}}, // 30 ms frames, DTMF events between
		// SIP over TCP, both directions, comfort noise (PT 13) between.
		{"pcap/audiocodes_sip-over-tcp.pcap", "158936656982201062716@10.33.6.100", []streamRef{{0x42F433D4, 8, "al"}, {0x5A3361B3, 8, "al"}}},
		{"pcap/wireshark_SIP_DTMF2.cap", "rtp:192.168.105.110:4374", []streamRef{{0x9A7B5382, 8, "al"}}}, // 2 packets lost
		// No SIP at all; RFC 2833 events between.
		{"pcap/metaswitch_09a_2833_dtmf.pcap", "rtp:192.91.191.186:20014", []streamRef{{0x12CC6BF4, 0, "ul"}}},
		// G.722, decoded at 16 kHz (the SIPREC INVITE's first fragment is
		// missing, so these are found by their RTP).
		{"pcap/miarec_siprec_dual_channel_udp.pcap", "rtp:192.168.86.48:58594", []streamRef{{0x19473744, 9, "g722"}}},
		{"pcap/miarec_siprec_dual_channel_udp.pcap", "rtp:192.168.86.48:58596", []streamRef{{0x04AD37B4, 9, "g722"}}},
	} {
		e.assertPlays(stacktest.SharedTestdata(t, c.capture), c.call, c.refs)
	}
	// The Opus call's stream, kept as Ogg Opus, is played out as it is.
	oggPath := filepath.Join(t.TempDir(), "call.ogg")
	out = cmd("play", "1-4237@10.0.2.20", "--stream", "callee-audio", "-o", oggPath, "--database", db, "--brokers", brokers, "--keyring", keyring, "--objects", objects)
	if ogg, err := os.ReadFile(oggPath); err != nil || !bytes.HasPrefix(ogg, []byte("OggS")) || !bytes.Contains(ogg[:200], []byte("OpusHead")) || !strings.Contains(out, "verified") {
		t.Fatalf("Ogg Opus stream: %v\n%s", err, out)
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

// streamRef names one RTP stream of a capture, and how sox or ffmpeg
// decodes it.
type streamRef struct {
	ssrc  uint32
	pt    int
	codec string // sox's "ul" or "al", or "g722" for ffmpeg
}

// find runs search --json with args.
func (e *cliEnv) find(args ...string) []search.Result {
	e.t.Helper()
	var rs []search.Result
	if err := json.Unmarshal([]byte(e.cmd(append([]string{"search", "--json", "--database", e.db}, args...)...)), &rs); err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// assertPlays plays the recording of call (a SIP Call-ID, or a party for
// a call found by its RTP) and checks that each stream of refs is, sample
// for sample and at its RTP time, in one channel of its own (tshark's
// export of capture decoded by sox or ffmpeg), and that nothing else
// sounds. It returns the call as search finds it.
func (e *cliEnv) assertPlays(capture, call string, refs []streamRef) search.Result {
	t := e.t
	t.Helper()
	var rs []search.Result
	if strings.HasPrefix(call, "rtp:") {
		rs = e.find("--party", call)
	} else {
		rs = e.find("--call-id", call)
	}
	if len(rs) != 1 || rs[0].Status != search.StatusRecorded {
		t.Fatalf("call %s: %+v", call, rs)
	}
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	out := e.cmd("play", rs[0].CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
	if !strings.Contains(out, "verified") {
		t.Fatalf("play: %s", out)
	}
	wav, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	// sox reads the header as a WAV player would.
	rate := "8000"
	if refs[0].codec == "g722" {
		rate = "16000"
	}
	if info, err := exec.Command("soxi", wavPath).CombinedOutput(); err != nil ||
		!strings.Contains(string(info), "Channels       : 2") || !strings.Contains(string(info), "Sample Rate    : "+rate) {
		t.Fatalf("soxi: %v\n%s", err, info)
	}
	left, right := wavChannels(t, wav)
	chans := [][]int16{left, right}
	used := [2]bool{}
	for _, r := range refs {
		k := fmt.Sprintf("%s\x00%08x\x00%d\x00%s", capture, r.ssrc, r.pt, r.codec)
		ref, ok := e.refs[k]
		if !ok { // one export per stream, however many calls replay it
			ref.want, ref.cn = tsharkRef(t, capture, r.ssrc, r.pt, r.codec)
			if e.refs == nil {
				e.refs = map[string]tsharkExport{}
			}
			e.refs[k] = ref
		}
		want, cn := ref.want, ref.cn
		found := false
		for i, ch := range chans {
			at := matchAt(t, ch, want, cn)
			if used[i] || at < 0 || !silent(ch[:at]) || !silent(ch[at+len(want):]) {
				continue
			}
			used[i], found = true, true
			t.Logf("%s SSRC 0x%08x: %d samples equal tshark's export decoded by %s, channel %d from sample %d", call, r.ssrc, len(want), map[bool]string{true: "ffmpeg", false: "sox"}[r.codec == "g722"], i, at)
			break
		}
		if !found {
			t.Fatalf("%s: no channel holds SSRC 0x%08x as tshark+sox decode it, and nothing else", call, r.ssrc)
		}
	}
	for i, ch := range chans {
		if !used[i] && !silent(ch) {
			t.Errorf("%s: channel %d has sound no recorded stream explains", call, i)
		}
	}
	return rs[0]
}

// cliEnv runs the commands as a user would, in-process, against an
// embedded broker (topics created), a keyring, an object directory and a
// ClickHouse database of their own (dropped at the end).
type cliEnv struct {
	ctx                           context.Context
	t                             *testing.T
	brokers, keyring, objects, db string
	refs                          map[string]tsharkExport // by capture and stream
}

// tsharkExport is one stream's reference audio (tsharkRef).
type tsharkExport struct {
	want []int16
	cn   []cnSpan
}

func newCLIEnv(ctx context.Context, t *testing.T, name string) *cliEnv {
	t.Helper()
	chAddr := stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	stacktest.PlainKafka(t) // the commands below reach kfake, not the stack's Kafka
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	e := &cliEnv{ctx: ctx, t: t, brokers: strings.Join(cluster.ListenAddrs(), ","),
		keyring: filepath.Join(t.TempDir(), "keyring.json"), objects: filepath.Join(t.TempDir(), "objects"),
		db: fmt.Sprintf("verbatim_%s_%d", name, time.Now().UnixNano())}
	t.Cleanup(func() {
		if conn, _, err := (chFlags{addr: &chAddr, db: &e.db}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+e.db+"`")
			conn.Close()
		}
	})
	e.cmd("topics", "--create", "--brokers", e.brokers)
	return e
}

// cmd runs verbatim with args and returns its standard output; an error
// fails the test with both outputs.
func (e *cliEnv) cmd(args ...string) string {
	e.t.Helper()
	var out, errb bytes.Buffer
	if err := run(e.ctx, args, &out, &errb); err != nil {
		e.t.Fatalf("verbatim %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func runOut(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	return out.String() + errb.String(), err
}

func wavChannels(t *testing.T, wav []byte) (l, r []int16) {
	t.Helper()
	if len(wav) < 44 || string(wav[:4]) != "RIFF" || binary.LittleEndian.Uint16(wav[22:]) != 2 {
		t.Fatalf("not a stereo WAV")
	}
	if rate := binary.LittleEndian.Uint32(wav[24:]); rate != 8000 && rate != 16000 {
		t.Fatalf("a %d Hz WAV: recordings are 8 kHz, or 16 kHz with G.722", rate)
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

// cnSpan is where an RFC 3389 comfort-noise packet is in force, in samples
// of a tsharkRef reference: from its timestamp to the next packet's.
type cnSpan struct {
	from, to int
	level    int // -dBov
}

// tsharkRef exports one stream's RTP payloads of payload type pt with
// tshark, decodes them with sox (codec "ul" or "al") or ffmpeg ("g722", to
// 16 kHz) to 16-bit samples and places each packet's samples at its RTP
// timestamp, silence between: a reference made entirely by other people's
// code. It also returns the stream's comfort-noise spans (payload type 13)
// inside the reference.
func tsharkRef(t *testing.T, pcap string, ssrc uint32, pt int, codec string) ([]int16, []cnSpan) {
	t.Helper()
	out, err := exec.Command("tshark", "-r", pcap, "-o", "rtp.heuristic_rtp:TRUE",
		"-Y", fmt.Sprintf("rtp.ssrc == 0x%08x", ssrc),
		"-T", "fields", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.p_type", "-e", "rtp.payload").Output()
	if err != nil {
		t.Fatalf("tshark (make test installs it): %v", err)
	}
	type pkt struct {
		seq, ts, pt int
		payload     []byte
	}
	var all, pkts []pkt
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 3 {
			f = append(f, "") // an RTP packet without payload
		}
		if len(f) != 4 {
			t.Fatalf("tshark line %q", line)
		}
		seq, err1 := strconv.Atoi(f[0])
		ts, err2 := strconv.Atoi(f[1])
		ptype, err3 := strconv.Atoi(f[2])
		b, err4 := hex.DecodeString(strings.ReplaceAll(f[3], ":", ""))
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			t.Fatalf("tshark line %q", line)
		}
		all = append(all, pkt{seq, ts, ptype, b})
	}
	slices.SortStableFunc(all, func(a, b pkt) int { return a.seq - b.seq }) // no wrap in these streams
	for _, p := range all {
		if p.pt == pt {
			pkts = append(pkts, p)
		}
	}
	var raw []byte
	for _, p := range pkts {
		raw = append(raw, p.payload...)
	}
	dir := t.TempDir()
	in, outPath := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.raw")
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Samples per RTP clock tick (k: G.722 is 16 kHz audio on an 8 kHz
	// clock), and per payload octet (G.729: 80 samples in 10 octets).
	k, perOctet := 1, 1
	decode := exec.Command("sox", "-t", codec, "-r", "8000", "-c", "1", in, "-t", "raw", "-e", "signed", "-b", "16", "-L", outPath)
	switch codec {
	case "g722":
		k, perOctet = 2, 2
		decode = exec.Command("ffmpeg", "-nostdin", "-v", "error", "-f", "g722", "-i", in, "-f", "s16le", "-acodec", "pcm_s16le", outPath)
	case "g729":
		perOctet = 8
		decode = exec.Command("ffmpeg", "-nostdin", "-v", "error", "-f", "g729", "-i", in, "-f", "s16le", "-acodec", "pcm_s16le", outPath)
	}
	if b, err := decode.CombinedOutput(); err != nil {
		t.Fatalf("%s (make test installs it): %v: %s", decode.Args[0], err, b)
	}
	pcm, err := os.ReadFile(outPath)
	if err != nil || len(pcm) != 2*perOctet*len(raw) {
		t.Fatalf("%s output: %d bytes for %d octets (%v)", decode.Args[0], len(pcm), len(raw), err)
	}
	first, last := pkts[0], pkts[len(pkts)-1]
	s := make([]int16, k*(last.ts-first.ts)+perOctet*len(last.payload))
	i := 0
	for _, p := range pkts {
		for j := range perOctet * len(p.payload) {
			if at := k*(p.ts-first.ts) + j; at < len(s) {
				s[at] = int16(binary.LittleEndian.Uint16(pcm[2*(i+j):]))
			}
		}
		i += perOctet * len(p.payload)
	}
	var cn []cnSpan
	for n, p := range all {
		if p.pt == 13 && len(p.payload) > 0 && n+1 < len(all) && p.ts >= first.ts && all[n+1].ts <= last.ts {
			cn = append(cn, cnSpan{from: k * (p.ts - first.ts), to: k * (all[n+1].ts - first.ts), level: int(p.payload[0] & 0x7f)})
		}
	}
	t.Logf("tshark: %d packets of SSRC 0x%08x, PT %d, %d bytes of payload over %d samples, %d comfort-noise spans", len(pkts), ssrc, pt, len(raw), len(s), len(cn))
	return s, cn
}

// matchAt returns where want occurs in got sample for sample, except in
// the comfort-noise spans, which must hold noise at their level (within
// 3 dB); -1 if nowhere.
func matchAt(t *testing.T, got, want []int16, cn []cnSpan) int {
	t.Helper()
	if len(cn) == 0 {
		return containsAt(got, want)
	}
	equalOutside := func(at int) bool {
		prev := 0
		for _, sp := range append(cn, cnSpan{from: len(want), to: len(want)}) {
			if !slices.Equal(got[at+prev:at+sp.from], want[prev:sp.from]) {
				return false
			}
			prev = sp.to
		}
		return true
	}
	head := want[:cn[0].from]
	for from := 0; ; {
		i := containsAt(got[from:], head)
		if i < 0 || from+i+len(want) > len(got) {
			return -1
		}
		at := from + i
		if equalOutside(at) {
			for _, sp := range cn {
				var e float64
				for _, v := range got[at+sp.from : at+sp.to] {
					e += float64(v) * float64(v)
				}
				rms := math.Sqrt(e / float64(sp.to-sp.from))
				wantRMS := 32124 * math.Pow(10, -float64(sp.level)/20) // RFC 3389: 0 dBov is a full-scale µ-law square wave
				if math.Abs(20*math.Log10(rms/wantRMS)) > 3 {
					t.Fatalf("comfort noise over samples %d-%d: RMS %.1f, the packet says %d dBov (%.1f)", sp.from, sp.to, rms, sp.level, wantRMS)
				}
			}
			return at
		}
		from = at + 1
	}
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
