package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
)

// TestLiveSRTPCallBetweenBaresips is the live-capture acceptance test over
// SRTP: `verbatim ingest live --interface lo` records a call that two real
// user agents (Debian's baresip) place on loopback with SDES SRTP
// (RTP/SAVP, AES_CM_128_HMAC_SHA1_80, a key per direction), each playing
// a prompt file. The call is processed, projected and played like any
// other, and each channel of the WAV holds its sender's prompt exactly as
// sox encodes it to µ-law and back: decrypted, in order, nothing lost.
// It needs root (AF_PACKET), baresip and sox (`make test` installs them).
func TestLiveSRTPCallBetweenBaresips(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	if os.Geteuid() != 0 {
		t.Fatal("live capture needs root (CAP_NET_RAW)")
	}
	baresip, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip not installed: make test installs Debian's baresip-core")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// The prompts: a rising and a falling sweep, 3 s each, so the two
	// directions cannot be confused.
	prompt := func(name, sweep string) string {
		path := filepath.Join(dir, name)
		if b, err := exec.Command("sox", "-n", "-r", "8000", "-c", "1", "-b", "16", path, "synth", "3", "sine", sweep, "vol", "0.4").CombinedOutput(); err != nil {
			t.Fatalf("sox (make test installs it): %v: %s", err, b)
		}
		return path
	}
	alicePrompt, bobPrompt := prompt("alice.wav", "300-3000"), prompt("bob.wav", "3000-300")

	// Two user agents on loopback, SRTP mandatory, no registrar; bob
	// answers at once. Ports are away from the SIPp test's.
	ua := func(name string, sipPort, rtpLow int, account, source string) string {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:%d
audio_player aufile,%s
audio_source aufile,%s
audio_alert aufile,/dev/null
rtp_ports %d-%d
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module srtp.so
module_app account.so
module_app menu.so
`, sipPort, filepath.Join(d, "heard.wav"), source, rtpLow, rtpLow+9)
		if err := os.WriteFile(filepath.Join(d, "config"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "accounts"), []byte(account+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	aliceDir := ua("alice", 15260, 15300, "<sip:alice@127.0.0.1:15260>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMU", alicePrompt)
	bobDir := ua("bob", 15270, 15320, "<sip:bob@127.0.0.1:15270>;regint=0;mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU", bobPrompt)

	e := newCLIEnv(ctx, t, "live")
	brokers, keyring, objects, db, cmd := e.brokers, e.keyring, e.objects, e.db, e.cmd

	// verbatim ingest live, until the call is over. The kernel filter
	// (compiled by tcpdump) keeps the broker's and ClickHouse's loopback
	// TCP away from the capture.
	stopCapture := e.startLiveCapture("udp and portrange 15260-15329") // only this test's ports: other tests use loopback too

	bob := exec.CommandContext(ctx, baresip, "-f", bobDir, "-t", "30")
	var bobLog syncBuffer
	bob.Stdout, bob.Stderr = &bobLog, &bobLog
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bob.Process.Kill(); _ = bob.Wait() }()
	stacktest.WaitUDPBound(ctx, t, 15270) // bob listens before alice dials
	// alice hangs up (BYE) when her prompt ends; -t bounds her run.
	alice := exec.CommandContext(ctx, baresip, "-f", aliceDir, "-t", "6", "-e", "/dial sip:bob@127.0.0.1:15270")
	aliceLog, _ := alice.CombinedOutput()
	if !strings.Contains(string(aliceLog), "Call established") || !strings.Contains(string(aliceLog), "SRTP is Enabled") {
		t.Fatalf("baresip did not place an SRTP call:\n%s\n--- bob:\n%s", aliceLog, bobLog.String())
	}
	// bob answers the BYE with 200 OK, then says the call is terminated:
	// the capture has everything once it says so.
	for !strings.Contains(bobLog.String(), "terminated") {
		select {
		case <-ctx.Done():
			t.Fatalf("bob never saw the call end:\n%s", bobLog.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	captureOut := stopCapture()
	if !strings.Contains(captureOut, "lo: 1 calls") || !strings.Contains(captureOut, " 0 frames dropped by the kernel") ||
		strings.Contains(captureOut, "TCP segments") {
		t.Fatalf("ingest live: %s", captureOut)
	}

	out := cmd("process", "--brokers", brokers, "--keyring", keyring, "--objects", objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet")
	if !strings.Contains(out, "1 recordings stored") {
		t.Fatalf("process: %s", out)
	}
	cmd("project", "search", "--brokers", brokers, "--keyring", keyring, "--database", db, "--exit-when-idle")
	table := cmd("search", "--database", db, "--party", "sip:alice@127.0.0.1:15260")
	t.Log("\n" + table)
	if !strings.Contains(table, "complete") || !strings.Contains(table, "1 calls") {
		t.Fatalf("search:\n%s", table)
	}
	row := strings.Fields(strings.Split(strings.TrimSpace(table), "\n")[1])
	callID := row[len(row)-1] // the CALL column
	wavPath := filepath.Join(t.TempDir(), "call.wav")
	if out := cmd("play", callID, "-o", wavPath, "--database", db, "--brokers", brokers, "--keyring", keyring, "--objects", objects); !strings.Contains(out, "verified") {
		t.Fatalf("play: %s", out)
	}
	rec, err := os.ReadFile(wavPath)
	if err != nil {
		t.Fatal(err)
	}
	left, right := wavChannels(t, rec)
	for _, c := range []struct {
		who, prompt string
		ch          []int16
	}{{"alice (caller, left)", alicePrompt, left}, {"bob (callee, right)", bobPrompt, right}} {
		want := soxUlaw(t, c.prompt)
		at, exact := bestAlignment(c.ch, want)
		if at < 0 || !silent(c.ch[:at]) || !silent(c.ch[at+len(want):]) {
			t.Fatalf("%s: the channel (%d samples) does not hold the %d samples of the prompt and silence around them", c.who, len(c.ch), len(want))
		}
		// baresip's µ-law encoder rounds some values at a level boundary
		// the other way from sox's: those samples are one level apart (a
		// level is at most a sixteenth of the value, plus the small steps
		// near zero).
		for i, w := range want {
			if d := int(c.ch[at+i]) - int(w); abs(d) > abs(int(w))/16+8 {
				t.Fatalf("%s: sample %d is %d, sox's µ-law gives %d: more than one level apart", c.who, i, c.ch[at+i], w)
			}
		}
		if exact < len(want)*97/100 {
			t.Fatalf("%s: only %d of %d samples equal sox's µ-law", c.who, exact, len(want))
		}
		t.Logf("%s: the prompt's %d samples from sample %d, %d equal to sox's µ-law, the others one level away", c.who, len(want), at, exact)
	}
}

// bestAlignment returns where want best fits in got (the most samples
// equal), and how many are equal there; -1 if got is shorter.
func bestAlignment(got, want []int16) (at, equal int) {
	at = -1
	for off := 0; off+len(want) <= len(got); off++ {
		n := 0
		for i, w := range want {
			if got[off+i] == w {
				n++
			}
		}
		if n > equal || at < 0 {
			at, equal = off, n
		}
	}
	return at, equal
}

func abs(v int) int { return max(v, -v) }

// TestLiveFilterErrors: a filter expression tcpdump cannot compile is
// refused with tcpdump's reason, before anything is captured.
func TestLiveFilterErrors(t *testing.T) {
	stacktest.Env(t, "VERBATIM_INTEGRATION") // make test installs tcpdump
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--filter", "udp port"}, "syntax error"},
		{[]string{"--filter", "udp", "--filter-bpf", "1,6 0 0 0"}, "not both"},
	} {
		args := append([]string{"ingest", "live", "--interface", "lo", "--brokers", "127.0.0.1:1"}, c.args...)
		var out, errb bytes.Buffer
		err := run(context.Background(), args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v", c.args, err)
		}
	}
	// A compiled program is `tcpdump -ddd` form: a count, then that many
	// instructions of four numbers.
	prog, err := compileFilter(context.Background(), "lo", "udp or tcp port 5060")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(prog), "\n")
	if n, err := strconv.Atoi(lines[0]); err != nil || n != len(lines)-1 || n < 4 || len(strings.Fields(lines[1])) != 4 {
		t.Fatalf("compiled %q", prog)
	}
}

// soxUlaw returns a WAV file's samples after sox's µ-law encoding and
// decoding: what a G.711 µ-law recording of it holds.
func soxUlaw(t *testing.T, path string) []int16 {
	t.Helper()
	ul := filepath.Join(t.TempDir(), "p.ul")
	raw := filepath.Join(t.TempDir(), "p.raw")
	if b, err := exec.Command("sox", path, "-t", "ul", ul).CombinedOutput(); err != nil {
		t.Fatalf("sox (make test installs it): %v: %s", err, b)
	}
	if b, err := exec.Command("sox", "-t", "ul", "-r", "8000", "-c", "1", ul, "-t", "raw", "-e", "signed", "-b", "16", "-L", raw).CombinedOutput(); err != nil {
		t.Fatalf("sox: %v: %s", err, b)
	}
	return stacktest.ReadPCM(t, raw)
}

// TestLiveSIPpCallPlaysItsAudio: SIPp's uac_pcap places three calls at
// once (-l 3) to SIPp's uas on loopback, each offering RTP/AVP 8 101 and
// playing SIPp's A-law sample, while the uas answers RTP/AVP 0 alone and
// gives every call the same media address. Captured live, recorded and played, the
// caller's channel of each call holds the sample's audio as tshark's export
// of it decodes with sox, at its RTP time. (The recording was silent while the
// capture counted every packet: static payload types the answer omits.)
func TestLiveSIPpCallPlaysItsAudio(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	if os.Geteuid() != 0 {
		t.Fatal("live capture needs root (CAP_NET_RAW)")
	}
	sipp, dir := stacktest.SIPp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "live_sipp")
	stopCapture := e.startLiveCapture("udp and portrange 15400-15499") // only this test's ports: other tests use loopback too
	// Three calls at once (-l 3): the uas answers each with its one media
	// address, the callers send from their own ports.
	uas := exec.CommandContext(ctx, sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", "15401", "-mp", "15460", "-m", "3", "-nostdin")
	uas.Dir = dir
	if err := uas.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = uas.Process.Kill(); _ = uas.Wait() }()
	stacktest.WaitUDPBound(ctx, t, 15401)
	uac := exec.CommandContext(ctx, sipp, "-sn", "uac_pcap", "127.0.0.1:15401", "-i", "127.0.0.1", "-p", "15402", "-mp", "15410",
		"-l", "3", "-m", "3", "-r", "3", "-nostdin")
	uac.Dir = dir
	if b, err := uac.CombinedOutput(); err != nil {
		t.Logf("%s", b[max(0, len(b)-2000):])
		t.Fatalf("sipp uac: %v", err)
	}
	if err := uas.Wait(); err != nil {
		t.Fatalf("sipp uas: %v", err)
	}
	stopCapture() // both SIPps have exited: the call is over
	e.processAndProject()
	rs := e.find()
	if len(rs) != 3 {
		t.Fatalf("%d calls found, want SIPp's three", len(rs))
	}
	for _, c := range rs {
		r := e.assertPlays(stacktest.SharedTestdata(t, "pcap/sipp_g711a.pcap"), c.CallID, []streamRef{{0xDEE0EE8F, 8, "al"}})
		if cs := r.Recording.Completeness; cs == nil || cs.Status != schemas.StatusComplete {
			t.Fatalf("completeness %+v, ledgers %+v", cs, r.Recording.Ledgers)
		}
		t.Logf("%s: %s", c.SIPCallID, r.Recording.Completeness)
	}
}

// startLiveCapture runs verbatim ingest live on lo with a kernel filter
// until the returned func is called, which stops it and returns what it
// printed. It returns once the capture says it is capturing.
func (e *cliEnv) startLiveCapture(filter string) (stop func() string) {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	var stderr syncBuffer
	var out bytes.Buffer
	captured := make(chan error, 1)
	go func() {
		captured <- run(ctx, []string{"ingest", "live", "--interface", "lo", "--filter", filter, "--brokers", e.brokers, "--keyring", e.keyring}, &out, &stderr)
	}()
	for !strings.Contains(stderr.String(), "capturing on lo") {
		select {
		case err := <-captured:
			cancel()
			t.Fatalf("ingest live: %v\n%s", err, stderr.String())
		case <-e.ctx.Done():
			cancel()
			t.Fatal("ingest live never started capturing")
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Cleanup(cancel)
	return func() string {
		t.Helper()
		cancel()
		if err := <-captured; err != nil {
			t.Fatalf("ingest live: %v\n%s", err, stderr.String())
		}
		t.Log(out.String())
		return out.String()
	}
}
