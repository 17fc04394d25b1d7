package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// The oracle: every audio stream tshark sees in every capture of
// ../shared/testdata is either in the recording of its own call, sample
// for sample at its RTP time and alone in its channel, or its call's label
// says why not. The reference is built without Verbatim's code: tshark's
// export of the payloads decoded by sox or ffmpeg, or, for SRTP whose
// plaintext tshark cannot export, the MANIFEST's digest of the decrypted
// audio.

// oracleStream is one RTP source as tshark sees it.
type oracleStream struct {
	ssrc    uint32
	pt      int // its audio payload type
	packets int // of that payload type
}

// tsharkStreams lists the audio streams of a capture: per SSRC, the most
// common payload type that is neither comfort noise (13) nor an RFC 4733
// event (a dynamic type whose payloads are 4 octets).
func tsharkStreams(t *testing.T, capture string) []oracleStream {
	t.Helper()
	out, err := exec.Command("tshark", "-r", capture, "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp.version == 2",
		"-T", "fields", "-e", "rtp.ssrc", "-e", "rtp.p_type", "-e", "udp.length").Output()
	if err != nil {
		t.Fatalf("tshark (make test installs it): %v", err)
	}
	counts := map[uint32]map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || f[0] == "" {
			continue
		}
		ssrc, err1 := strconv.ParseUint(strings.TrimPrefix(f[0], "0x"), 16, 32)
		pt, err2 := strconv.Atoi(f[1])
		udpLen, err3 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("tshark line %q", line)
		}
		if pt == 13 || (pt >= 96 && udpLen == 8+12+4) {
			continue
		}
		if counts[uint32(ssrc)] == nil {
			counts[uint32(ssrc)] = map[int]int{}
		}
		counts[uint32(ssrc)][pt]++
	}
	var ss []oracleStream
	for ssrc, pts := range counts {
		s := oracleStream{ssrc: ssrc}
		for pt, n := range pts {
			if n > s.packets {
				s.pt, s.packets = pt, n
			}
		}
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(a, b oracleStream) int { return int(a.ssrc>>1) - int(b.ssrc>>1) })
	return ss
}

// referenceCodec is how sox or ffmpeg decodes a payload type for
// tsharkRef, or "" when there is no reference decoder here.
func referenceCodec(pt int) string {
	switch pt {
	case 0:
		return "ul"
	case 8:
		return "al"
	case 9:
		return "g722"
	}
	return ""
}

// decryptedDigest is the MANIFEST's SHA-256 of the decrypted, decoded
// (s16le) audio of SRTP streams whose keys the MANIFEST gives, and how
// many samples it covers.
var decryptedDigest = map[uint32]struct {
	sum     string
	samples int
}{
	0xDEADBEEF: {"82161ad840ebec05699eb524cb0650b47800b413714fc2ce5736e00c6774891c", 11888 * 160},
}

func TestOracleEveryCapture(t *testing.T) {
	captures, _ := filepath.Glob(filepath.Join(stacktest.SharedTestdata(t, "pcap"), "*"))
	srtpCaptures, _ := filepath.Glob(filepath.Join(stacktest.SharedTestdata(t, "srtp"), "*.pcap"))
	captures = append(captures, srtpCaptures...)
	// Keys the MANIFEST gives where no SDP does, in a file as a user
	// passes them (never on the command line).
	keyFile := filepath.Join(t.TempDir(), "srtp.keys")
	if err := os.WriteFile(keyFile, []byte("# from the MANIFEST\nAES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ingestArgs := map[string][]string{
		"marseillaise-srtp.pcap": {"--srtp-key-file", keyFile},
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAPTURE\tSTREAM\tPT\tPACKETS\tFOUND IN\tLABEL")
	var failures []string
	for _, capture := range captures {
		name := filepath.Base(capture)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			e := newCLIEnv(ctx, t, "oracle")
			args := append([]string{"ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring}, ingestArgs[name]...)
			e.cmd(append(args, capture)...)
			e.processAndProject()
			calls := e.find("--limit", "1000")
			t.Log("\n" + e.cmd("search", "--database", e.db, "--limit", "1000"))
			type owner struct {
				call   search.Result
				ledger search.Ledger
				chans  [][]int16
			}
			owners := map[uint32]*owner{}
			usedBy := map[string]uint32{} // call id and channel -> the SSRC found there
			wavs := map[string][][]int16{}
			for _, c := range calls {
				if c.Recording == nil || c.Recording.Failure != "" {
					continue
				}
				for _, l := range c.Recording.Ledgers {
					for _, ssrc := range l.SSRCs {
						owners[ssrc] = &owner{call: c, ledger: l}
					}
				}
			}
			fail := func(format string, a ...any) {
				msg := name + ": " + fmt.Sprintf(format, a...)
				failures = append(failures, msg)
				t.Error(msg)
			}
			for _, s := range tsharkStreams(t, capture) {
				o := owners[s.ssrc]
				if o == nil {
					fail("SSRC 0x%08x (%d packets): in no recording", s.ssrc, s.packets)
					fmt.Fprintf(tw, "%s\t0x%08x\t%d\t%d\t-\tin no recording\n", name, s.ssrc, s.pt, s.packets)
					continue
				}
				label := o.call.Recording.Completeness.String()
				if wavs[o.call.CallID] == nil {
					wavPath := filepath.Join(t.TempDir(), "call.wav")
					e.cmd("play", o.call.CallID, "-o", wavPath, "--database", e.db, "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects)
					wav, err := os.ReadFile(wavPath)
					if err != nil {
						t.Fatal(err)
					}
					l, r := wavChannels(t, wav)
					wavs[o.call.CallID] = [][]int16{l, r}
				}
				chans := wavs[o.call.CallID]
				found := -1
				if d, ok := decryptedDigest[s.ssrc]; ok {
					for i, ch := range chans {
						if len(ch) >= d.samples {
							if sum := sha256.Sum256(pcmLE(ch[:d.samples])); hex.EncodeToString(sum[:]) == d.sum {
								found = i
							}
						}
					}
				} else if s.pt == 18 {
					// G.729: two decoders of it agree to about 24 dB
					// (libbcg729 into the recording, ffmpeg's for the
					// reference), not sample for sample.
					want, _ := tsharkRef(t, capture, s.ssrc, s.pt, "g729")
					for i, ch := range chans {
						if best, at, off := snrMatch(ch, want); best >= 15 && off <= 5 {
							t.Logf("G.729 SSRC 0x%08x: channel %d against ffmpeg's decode: %.1f dB SNR from sample %d (%.1f dB a frame off)", s.ssrc, i, best, at, off)
							found = i
							break
						}
					}
				} else if codec := referenceCodec(s.pt); codec != "" {
					want, cn := tsharkRef(t, capture, s.ssrc, s.pt, codec)
					for i, ch := range chans {
						if at := matchAt(t, ch, want, cn); at >= 0 {
							found = i
							break
						}
					}
				} else if ref := e.oggReference(capture, o.call.CallID, o.ledger.StreamID, s.ssrc); ref != nil {
					// Opus: kept as it came in an Ogg object too; its
					// packets are tshark's, ffmpeg decodes it.
					for i, ch := range chans {
						if best, _, off := snrMatch(ch, ref); snrMatches(best, off) {
							found = i
							break
						}
					}
				}
				where := "-"
				if found >= 0 {
					where = fmt.Sprintf("%s ch %d", o.call.CallID[:8], found)
				}
				fmt.Fprintf(tw, "%s\t0x%08x\t%d\t%d\t%s\t%s\n", name, s.ssrc, s.pt, s.packets, where, label)
				if found >= 0 {
					k := fmt.Sprintf("%s/%d", o.call.CallID, found)
					if other, taken := usedBy[k]; taken {
						fail("SSRC 0x%08x: in channel %d of %s, where SSRC 0x%08x is too", s.ssrc, found, o.call.CallID, other)
					}
					usedBy[k] = s.ssrc
				}
				switch {
				case found >= 0 && o.ledger.Recorded*100 < uint64(s.packets)*99:
					fail("SSRC 0x%08x: in the recording, but its ledger says %d of %d packets recorded", s.ssrc, o.ledger.Recorded, s.packets)
				case found < 0 && o.call.Recording.Completeness.Status == schemas.StatusComplete:
					fail("SSRC 0x%08x: not in its call's recording, which says %q", s.ssrc, label)
				case found < 0 && o.ledger.NotDecodable+o.ledger.EncryptedNoKeys+o.ledger.SRTPAuthFailed+o.ledger.LostInTransit == 0:
					fail("SSRC 0x%08x: not in its call's recording, and its ledger names no reason: %+v", s.ssrc, o.ledger)
				}
			}
		})
	}
	tw.Flush()
	t.Log("\n" + table.String())
	if len(failures) > 0 {
		t.Fatalf("%d streams neither recorded nor labelled:\n%s", len(failures), strings.Join(failures, "\n"))
	}
}

// oggReference returns ffmpeg's decode (16 kHz mono) of the Ogg object a
// call keeps of a stream, after checking that its packets are tshark's
// export of the stream's RTP payloads; nil when the call keeps none.
func (e *cliEnv) oggReference(capture, callID, streamID string, ssrc uint32) []int16 {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	oggPath, refPath := filepath.Join(dir, "stream.ogg"), filepath.Join(dir, "ref.raw")
	if _, err := runOut(e.ctx, "play", callID, "--stream", streamID, "-o", oggPath, "--database", e.db, "--brokers", e.brokers,
		"--keyring", e.keyring, "--objects", e.objects); err != nil {
		return nil
	}
	ogg, err := os.ReadFile(oggPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", capture, "-o", "rtp.heuristic_rtp:TRUE", "-Y", fmt.Sprintf("rtp.ssrc == 0x%08x", ssrc),
		"-T", "fields", "-e", "rtp.payload").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if p, err := hex.DecodeString(strings.ReplaceAll(line, ":", "")); err != nil || !bytes.Contains(ogg, p) {
			t.Fatalf("RTP payload %d of SSRC 0x%08x is not in the stream's Ogg object", i, ssrc)
		}
	}
	if b, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", oggPath, "-ar", "16000", "-ac", "1", "-f", "s16le", refPath).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
	return stacktest.ReadPCM(t, refPath)
}
