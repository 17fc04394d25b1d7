package ingest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v2"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

type ingested struct {
	started map[string]*verbatimv1.CallStarted
	ended   map[string]*verbatimv1.CallEnded
	batches map[string][]*verbatimv1.PacketBatch // by call id
	media   map[string]*verbatimv1.MediaEnded
	meta    []*verbatimv1.MetadataAttached
	dks     map[string]*verbatimv1.DataKey
	records []*kgo.Record
	// err is ingest's ErrCaptureDamaged, for a damaged capture (any other
	// error fails the test).
	err error
}

func ingestFile(t *testing.T, name string, data []byte, opts ...func(*ingest.Config)) (ingest.Report, ingested) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	return ingestWith(t, cluster.ListenAddrs(), kr, "demo", name, data, opts...)
}

// ingestWith ingests a capture for tenant and reads back that tenant's
// records from the start of the topics.
func ingestWith(t *testing.T, brokers []string, km keys.Manager, tenant, name string, data []byte, opts ...func(*ingest.Config)) (ingest.Report, ingested) {
	t.Helper()
	if data == nil {
		var err error
		if data, err = os.ReadFile(stacktest.SharedTestdata(t, name)); err != nil {
			t.Fatal(err)
		}
	}
	return ingestRun(t, brokers, km, tenant, func(ctx context.Context, cfg ingest.Config) (ingest.Report, error) {
		return ingest.Pcap(ctx, cfg, bytes.NewReader(data))
	}, opts...)
}

// ingestRun runs one ingest (a file, or a live capture) for tenant into
// brokers and reads back that tenant's records.
func ingestRun(t *testing.T, brokers []string, km keys.Manager, tenant string, run func(context.Context, ingest.Config) (ingest.Report, error),
	opts ...func(*ingest.Config)) (ingest.Report, ingested) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	cfg := ingest.Config{Tenant: tenant, Keys: km, Producer: cl}
	for _, o := range opts {
		o(&cfg)
	}
	rep, runErr := run(ctx, cfg)
	if runErr != nil && !errors.Is(runErr, ingest.ErrCaptureDamaged) {
		t.Fatalf("ingest: %v (report %+v)", runErr, rep)
	}

	out := ingested{started: map[string]*verbatimv1.CallStarted{}, ended: map[string]*verbatimv1.CallEnded{}, batches: map[string][]*verbatimv1.PacketBatch{},
		media: map[string]*verbatimv1.MediaEnded{}, dks: map[string]*verbatimv1.DataKey{}, err: runErr}
	cons, err := kafkaclient.New(stacktest.KafkaFor(brokers, ""),
		kgo.ConsumeTopics(schemas.TopicCalls, schemas.TopicMedia, schemas.TopicKeys, schemas.TopicMetadata), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	// Read up to the end offsets as they are now: everything ingested, no
	// fixed wait (fresh topics on a real broker can take seconds to serve).
	stacktest.ReadBack(ctx, t, cons, func(r *kgo.Record) {
		out.records = append(out.records, r)
		env, err := schemas.ParseHeaders(r.Headers)
		if err != nil {
			t.Fatalf("record without a valid envelope: %v", err)
		}
		if env.Tenant != tenant {
			return // an earlier run's records on a shared broker
		}
		switch env.Type {
		case "verbatim.v1.CallStarted":
			m := &verbatimv1.CallStarted{}
			mustUnmarshal(t, r.Value, m)
			out.started[m.GetCallId()] = m
		case "verbatim.v1.CallEnded":
			m := &verbatimv1.CallEnded{}
			mustUnmarshal(t, r.Value, m)
			out.ended[m.GetCallId()] = m
		case "verbatim.v1.PacketBatch":
			m := &verbatimv1.PacketBatch{}
			mustUnmarshal(t, r.Value, m)
			if out.media[m.GetCallId()] != nil {
				t.Errorf("batch %s/%d after the call's MediaEnded", m.GetStreamId(), m.GetBatchIndex())
			}
			out.batches[m.GetCallId()] = append(out.batches[m.GetCallId()], m)
		case "verbatim.v1.MediaEnded":
			m := &verbatimv1.MediaEnded{}
			mustUnmarshal(t, r.Value, m)
			out.media[m.GetCallId()] = m
		case "verbatim.v1.DataKey":
			m := &verbatimv1.DataKey{}
			mustUnmarshal(t, r.Value, m)
			out.dks[m.GetKeyId()] = m
		case "verbatim.v1.MetadataAttached":
			m := &verbatimv1.MetadataAttached{}
			mustUnmarshal(t, r.Value, m)
			out.meta = append(out.meta, m)
		}
	}, schemas.TopicCalls, schemas.TopicMedia, schemas.TopicKeys, schemas.TopicMetadata)
	return rep, out
}

func mustUnmarshal(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

func TestPcapG711(t *testing.T) {
	rep, out := ingestFile(t, "pcap/wireshark_sip-rtp-g711.pcap", nil)
	checkG711(t, rep, out)
}

// TestPcapRealStack ingests into the local stack's Kafka with data keys
// from its Vault (Transit), under a tenant of its own.
func TestPcapRealStack(t *testing.T) {
	brokers := strings.Split(stacktest.Env(t, "VERBATIM_KAFKA_BROKERS"), ",")
	km, err := keys.NewVault(keys.VaultConfig{Address: stacktest.Env(t, "VERBATIM_VAULT_ADDR"), CAFile: os.Getenv("VERBATIM_VAULT_CA"),
		Token: stacktest.Env(t, "VERBATIM_VAULT_TOKEN"), CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	tenant := "t" + strconv.FormatInt(time.Now().UnixNano(), 36)
	rep, out := ingestWith(t, brokers, km, tenant, "pcap/wireshark_sip-rtp-g711.pcap", nil)
	checkG711(t, rep, out)
}

func checkG711(t *testing.T, rep ingest.Report, out ingested) {
	t.Helper()
	t.Logf("report: %+v", rep)
	// Call keys only: on a shared broker, a processor running meanwhile
	// may already have added recording keys for these calls.
	callKeys := 0
	for _, dk := range out.dks {
		if dk.GetPurpose() == "call" {
			callKeys++
		}
	}
	if rep.Calls != 2 || len(out.started) != 2 || len(out.ended) != 2 || callKeys != 2 {
		t.Fatalf("calls %d, started %d, ended %d, call keys %d", rep.Calls, len(out.started), len(out.ended), callKeys)
	}
	var packets = map[string]uint32{}
	for id, bs := range out.batches {
		for _, b := range bs {
			packets[id] += b.GetPacketCount()
		}
	}
	// MediaEnded closes each call's media with what was sent.
	for id, bs := range out.batches {
		me := out.media[id]
		if me == nil {
			t.Fatalf("call %s: no MediaEnded", id)
		}
		var sent uint64
		for _, m := range me.GetMedia() {
			sent += m.GetBatches()
		}
		if sent != uint64(len(bs)) || len(me.GetStreams()) == 0 {
			t.Errorf("call %s: MediaEnded counts %d batches in %d streams; %d were produced", id, sent, len(me.GetStreams()), len(bs))
		}
	}
	var byBye, byTimeout int
	for id, e := range out.ended {
		d := e.GetDuration().AsDuration()
		switch e.GetReason() {
		case verbatimv1.EndReason_END_REASON_BYE:
			byBye++
			// 1-1966: 425 PCMU packets; the dialog lasts about 8.5 s.
			if packets[id] != 425 || d < 8*time.Second || d > 9*time.Second {
				t.Errorf("BYE call: %d packets, duration %v", packets[id], d)
			}
		case verbatimv1.EndReason_END_REASON_TIMEOUT:
			byTimeout++
			// 1-1968: no BYE; 414 PCMA packets; ends at its last packet.
			if packets[id] != 414 || d < 8*time.Second || d > 9*time.Second {
				t.Errorf("timed-out call: %d packets, duration %v", packets[id], d)
			}
		}
	}
	if byBye != 1 || byTimeout != 1 {
		t.Fatalf("ended by BYE %d, by timeout %d", byBye, byTimeout)
	}
	// Nothing readable leaves the capture layer.
	for _, r := range out.records {
		for _, secret := range []string{"sip:", "sipp@", "1-1966@", "10.0.2.20", "FreeSWITCH"} {
			if bytes.Contains(r.Value, []byte(secret)) || bytes.Contains(r.Key, []byte(secret)) {
				t.Fatalf("record on %s holds plaintext %q", r.Topic, secret)
			}
		}
	}
}

func TestPcapTruncatedAndCorrupt(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt one SIP message in place (the first INVITE's start line) and
	// cut the file near the end.
	bad := bytes.Clone(data)
	i := bytes.Index(bad, []byte("INVITE sip:"))
	copy(bad[i:], "XXXXXX\x00\x01\x02")
	bad = bad[:len(bad)-1000]
	rep, out := ingestFile(t, "", bad)
	if !rep.Truncated || rep.SIP.Malformed == 0 || !strings.Contains(rep.LastSIPError, "malformed") {
		t.Fatalf("report does not say what was wrong: %+v", rep)
	}
	// Input was lost: ingest says so with an error, and the calls open at
	// the cut carry it into their ledgers.
	if !errors.Is(out.err, ingest.ErrCaptureDamaged) || !strings.Contains(out.err.Error(), "capture ended early after frame") {
		t.Fatalf("a truncated capture gave error %v", out.err)
	}
	for id, me := range out.media {
		if !strings.HasPrefix(me.GetCaptureDamaged(), "capture ended early after frame") {
			t.Errorf("call %s was open at the cut, but its MediaEnded says %q", id, me.GetCaptureDamaged())
		}
	}
	// The second call is still recorded, and the first call's audio is
	// not lost with its INVITE: it is recorded as a call found by its RTP.
	if len(out.started) != 2 || len(out.ended) != 2 {
		t.Fatalf("started %d ended %d, want the second call and the first's RTP", len(out.started), len(out.ended))
	}
	var rtpOnly int
	for id, st := range out.started {
		var n uint32
		for _, b := range out.batches[id] {
			n += b.GetPacketCount()
		}
		if len(st.GetStreams()) == 1 && st.GetStreams()[0].GetCodecs()[0].GetName() == "PCMU" && n == 425 {
			rtpOnly++
		}
	}
	if rtpOnly != 1 {
		t.Fatalf("the first call's 425 PCMU packets were not recorded on their own")
	}
}

// TestPcapRTPOnly: captures without SIP are recorded as calls found by
// their RTP: SIPp's A-law sample (30 ms frames) and Metaswitch's PCMU with
// RFC 2833 events, every packet of each.
func TestPcapRTPOnly(t *testing.T) {
	for _, c := range []struct {
		file    string
		packets uint32
		codec   string
	}{
		{"pcap/sipp_g711a.pcap", 236, "PCMA"},
		{"pcap/metaswitch_09a_2833_dtmf.pcap", 2071 + 94, "PCMU"},
	} {
		rep, out := ingestFile(t, c.file, nil)
		if rep.Calls != 1 || len(out.started) != 1 || len(out.ended) != 1 {
			t.Fatalf("%s: report %+v", c.file, rep)
		}
		for id, st := range out.started {
			var n uint32
			for _, b := range out.batches[id] {
				n += b.GetPacketCount()
			}
			if n != c.packets || st.GetStreams()[0].GetCodecs()[0].GetName() != c.codec || out.ended[id].GetReason() != verbatimv1.EndReason_END_REASON_TIMEOUT {
				t.Fatalf("%s: %d packets, streams %v", c.file, n, st.GetStreams())
			}
		}
	}
}

// failingProducer fails every record, as a client does when Kafka is
// unreachable past its delivery timeout.
type failingProducer struct {
	n  int
	wg sync.WaitGroup
}

func (f *failingProducer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	f.n++
	f.wg.Add(1)
	go func() { // promises run on other goroutines, as kgo's do
		defer f.wg.Done()
		promise(r, errors.New("unable to dial: connection refused"))
	}()
}

// Flush waits for every promise and reports no error, as kgo's Flush does
// when records fail.
func (f *failingProducer) Flush(context.Context) error {
	f.wg.Wait()
	return nil
}

func TestPcapDeliveryFailureIsAnError(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	p := &failingProducer{}
	_, err = ingest.Pcap(context.Background(), ingest.Config{Tenant: "demo", Keys: kr, Producer: p}, bytes.NewReader(data))
	if err == nil || !strings.Contains(err.Error(), "connection refused") || p.n == 0 {
		t.Fatalf("undelivered records: err %v after %d records, want a delivery error", err, p.n)
	}
}

// TestPcapSIPOverTCP: the AudioCodes capture signals over one TCP
// connection (SIP messages split and joined across segments); its call is
// tracked from INVITE to BYE and both RTP directions are batched.
func TestPcapSIPOverTCP(t *testing.T) {
	rep, out := ingestFile(t, "pcap/audiocodes_sip-over-tcp.pcap", nil)
	t.Logf("report: %+v", rep)
	if rep.Calls != 1 || len(out.ended) != 1 || rep.SIPOverTCP.Messages != 7 || rep.SIP.Malformed != 0 {
		t.Fatalf("calls %d, ended %d, SIP over TCP %+v", rep.Calls, len(out.ended), rep.SIPOverTCP)
	}
	for _, e := range out.ended {
		if e.GetReason() != verbatimv1.EndReason_END_REASON_BYE {
			t.Fatalf("ended by %v", e.GetReason())
		}
	}
	// 40 PCMA + 2 comfort noise one way, 20 + 4 the other (MANIFEST).
	perStream := map[string]uint32{}
	for _, bs := range out.batches {
		for _, b := range bs {
			perStream[b.GetStreamId()] += b.GetPacketCount()
		}
	}
	if a, b := perStream["caller-audio"], perStream["callee-audio"]; len(perStream) != 2 || min(a, b) != 24 || max(a, b) != 42 {
		t.Fatalf("packets per stream %v, want 42 and 24", perStream)
	}
	// Its two RTCP sender reports (to RTP port + 1) become call-quality
	// metadata: the one reception report says nothing was lost.
	if rep.RTCPPackets != 2 || rep.BadRTCP != 0 || len(out.meta) != 1 || out.meta[0].GetSource() != "verbatim-ingest:rtcp" {
		t.Fatalf("RTCP: %d packets (%d bad), %d metadata events", rep.RTCPPackets, rep.BadRTCP, len(out.meta))
	}
	scores := map[string]float64{}
	for _, sc := range out.meta[0].GetScores() {
		scores[sc.GetName()] = sc.GetValue()
	}
	if scores["rtcp.ssrc.0x42f433d4.reports"] != 1 || scores["rtcp.ssrc.0x42f433d4.packets_lost"] != 0 || len(scores) != 4 {
		t.Fatalf("RTCP scores %v", scores)
	}
}

// TestPcapMediaBeforeSDPIsKept: RTP that arrives before the SIP message
// whose SDP describes it is held and given to the call, not lost and not
// made a call of its own.
func TestPcapMediaBeforeSDPIsKept(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// Move the first two RTP packets of 1-1966 (frames 6 and 7, after the
	// INVITE, 100, 200) before the INVITE, keeping their times.
	var frames [][]byte
	var infos []gopacket.CaptureInfo
	for {
		b, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		frames, infos = append(frames, b), append(infos, ci)
	}
	order := []int{}
	var rtpFrames []int
	for i := range frames {
		if len(rtpFrames) < 2 && len(frames[i]) == 214 && i > 2 { // 14+20+8+12+160: the first PCMU packets
			rtpFrames = append(rtpFrames, i)
			continue
		}
		order = append(order, i)
	}
	// Put them first of all, before the INVITE whose SDP describes them.
	order = append(rtpFrames, order...)
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, r.LinkType()); err != nil {
		t.Fatal(err)
	}
	for _, i := range order {
		if err := w.WritePacket(infos[i], frames[i]); err != nil {
			t.Fatal(err)
		}
	}
	rep, out := ingestFile(t, "", buf.Bytes())
	if len(rtpFrames) != 2 || rep.Calls != 2 {
		t.Fatalf("moved %d frames; %d calls (want the 2 SIP calls only)", len(rtpFrames), rep.Calls)
	}
	var packets uint32
	for _, bs := range out.batches {
		for _, b := range bs {
			packets += b.GetPacketCount()
		}
	}
	if packets != 839 {
		t.Fatalf("%d RTP packets recorded, want all 839", packets)
	}
}

// marseillaiseKey is the MANIFEST's key for srtp/marseillaise-srtp.pcap.
const marseillaiseKey = "AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz"

// TestPcapSRTPForgedAndReplayed: in the SRTP sample, one packet is
// replayed and one forged (a payload bit flipped). Both are dropped and
// counted; every other packet is decrypted and batched.
func TestPcapSRTPForgedAndReplayed(t *testing.T) {
	data, err := os.ReadFile(stacktest.SharedTestdata(t, "srtp/marseillaise-srtp.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, r.LinkType()); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		b, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		b = bytes.Clone(b)
		if i == 200 {
			b[len(b)-20] ^= 0x01 // in the encrypted payload
		}
		if err := w.WritePacket(ci, b); err != nil {
			t.Fatal(err)
		}
		if i == 100 { // the same packet again
			if err := w.WritePacket(ci, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	key, err := ingest.ParseSRTPKey(marseillaiseKey)
	if err != nil {
		t.Fatal(err)
	}
	rep, out := ingestFile(t, "", buf.Bytes(), func(c *ingest.Config) { c.SRTPKeys = []ingest.SRTPKey{key} })
	if rep.Calls != 1 || rep.SRTPAuthFailures != 1 || rep.SRTPReplayed != 1 || rep.RTPPackets != 11887 {
		t.Fatalf("report: calls %d, auth failures %d, replayed %d, packets %d", rep.Calls, rep.SRTPAuthFailures, rep.SRTPReplayed, rep.RTPPackets)
	}
	for id, me := range out.media {
		if m := me.GetMedia()[0]; m.GetSrtpAuthFailures() != 1 || m.GetSrtpReplayed() != 1 {
			t.Fatalf("call %s: MediaEnded %v", id, m)
		}
	}
	if _, err := ingest.ParseSRTPKey("AES_CM_128_HMAC_SHA1_80:inline:c2hvcnQ="); err == nil {
		t.Fatal("a short key was accepted")
	}
}

// sendFragmented6 writes an IPv6 UDP datagram as fragments of at most
// size bytes of data, in the order given by order (indexes of fragments).
func sendFragmented6(t *testing.T, s *stacktest.Synth, src, dst netip.AddrPort, payload []byte, size int, id uint32, order ...int) {
	t.Helper()
	whole := stacktest.UDPFrame(t, src, dst, payload)
	const ethIP = 14 + 40
	datagram := whole[ethIP:] // UDP header and payload
	var frags [][]byte
	for off := 0; off < len(datagram); off += size {
		end := min(off+size, len(datagram))
		h := make([]byte, 8, 8+end-off)
		h[0] = byte(layers.IPProtocolUDP)
		field := uint16(off/8) << 3
		if end < len(datagram) {
			field |= 1
		}
		binary.BigEndian.PutUint16(h[2:], field)
		binary.BigEndian.PutUint32(h[4:], id)
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv6}
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, ip, gopacket.Payload(append(h, datagram[off:end]...))); err != nil {
			t.Fatal(err)
		}
		frags = append(frags, buf.Bytes())
	}
	if len(order) != len(frags) {
		t.Fatalf("%d fragments, order names %d", len(frags), len(order))
	}
	for _, i := range order {
		s.WriteFrame(frags[i])
	}
}

// rtpPacket is a 20 ms packet of 160 zero bytes.
func rtpPacket(ssrc uint32, seq uint16, pt uint8) []byte {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: ssrc},
		Payload: make([]byte, 160)}
	b, _ := p.Marshal()
	return b
}

// TestPcapSDES: a call whose SDP offers SRTP with an a=crypto key in each
// direction (RFC 4568). Each direction is decrypted with the key its
// sender announced, and the stream is decodable.
func TestPcapSDES(t *testing.T) {
	caller, callee := netip.MustParseAddrPort("192.0.2.10:5060"), netip.MustParseAddrPort("192.0.2.20:5060")
	callerMedia, calleeMedia := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.20:50000")
	keyA := bytes.Repeat([]byte{0xA1}, 30) // caller's master key || salt
	keyB := bytes.Repeat([]byte{0xB2}, 30)
	sdp := func(addr netip.AddrPort, key []byte) string {
		return stacktest.AudioSDP(addr, "RTP/SAVP", 0, "a=rtpmap:0 PCMU/8000", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(key))
	}
	sipMsg := func(first, cseq, body string) []byte {
		return stacktest.DialogMessage("sdes-1@example.com", first, cseq, body)
	}
	pc := stacktest.NewSynth(t, 10*time.Millisecond)
	write := pc.Send
	write(caller, callee, sipMsg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", sdp(callerMedia, keyA)))
	write(callee, caller, sipMsg("SIP/2.0 200 OK", "1 INVITE", sdp(calleeMedia, keyB)))
	write(caller, callee, sipMsg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
	encrypt := func(key []byte) func(seq uint16) []byte {
		ctx, err := srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
		if err != nil {
			t.Fatal(err)
		}
		return func(seq uint16) []byte {
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 7},
				Payload: bytes.Repeat([]byte{byte(seq)}, 160)}
			plain, _ := p.Marshal()
			out, err := ctx.EncryptRTP(nil, plain, nil)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	encA, encB := encrypt(keyA), encrypt(keyB)
	for seq := uint16(1); seq <= 100; seq++ {
		write(callerMedia, calleeMedia, encA(seq)) // caller sends with its own key
		write(calleeMedia, callerMedia, encB(seq))
	}
	// An SRTCP receiver report from the caller to the callee's RTCP port.
	rctx, err := srtp.CreateContext(keyA[:16], keyA[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	rr, _ := (&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 7, FractionLost: 64, TotalLost: 3, Jitter: 80}}}).Marshal()
	srtcp, err := rctx.EncryptRTCP(nil, rr, nil)
	if err != nil {
		t.Fatal(err)
	}
	write(netip.AddrPortFrom(callerMedia.Addr(), callerMedia.Port()+1), netip.AddrPortFrom(calleeMedia.Addr(), calleeMedia.Port()+1), srtcp)
	write(caller, callee, sipMsg("BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
	rep, out := ingestFile(t, "", pc.Bytes())
	if rep.RTCPPackets != 1 || len(out.meta) != 1 {
		t.Fatalf("SRTCP: %d RTCP packets, %d metadata events (%s)", rep.RTCPPackets, len(out.meta), rep.LastSRTPError)
	}
	for _, sc := range out.meta[0].GetScores() {
		if sc.GetName() == "rtcp.ssrc.0x00000007.jitter_max_ms" && sc.GetValue() != 10 {
			t.Fatalf("jitter %v ms, want 10 (80 at 8 kHz)", sc.GetValue())
		}
	}
	if rep.Calls != 1 || rep.RTPPackets != 200 || rep.SRTPAuthFailures != 0 || rep.SRTPReplayed != 0 {
		t.Fatalf("report: calls %d, packets %d, auth failures %d (%s)", rep.Calls, rep.RTPPackets, rep.SRTPAuthFailures, rep.LastSRTPError)
	}
	for _, me := range out.media { // the streams as finally negotiated
		for _, s := range me.GetStreams() {
			if !s.GetDecodable() || s.GetTransport() != "RTP/SAVP" {
				t.Fatalf("stream %v", s)
			}
		}
	}
	// The key never leaves the capture layer, not even sealed.
	for _, r := range out.records {
		for _, k := range [][]byte{keyA, keyB, []byte(base64.StdEncoding.EncodeToString(keyA))} {
			if bytes.Contains(r.Value, k) {
				t.Fatalf("record on %s holds an SRTP key", r.Topic)
			}
		}
	}
}

// TestPcapZRTP: the ZFONE capture's media is ZRTP-keyed SRTP. The ZRTP
// messages are recognised (not taken for bad RTP), and the streams are
// marked not decodable rather than decoded into noise.
func TestPcapZRTP(t *testing.T) {
	rep, out := ingestFile(t, "pcap/wireshark_Asterisk_ZFONE_XLITE.pcap", nil)
	if rep.ZRTPPackets == 0 || rep.BadRTP != 0 {
		t.Fatalf("ZRTP packets %d, bad RTP %d (%s)", rep.ZRTPPackets, rep.BadRTP, rep.LastRTPError)
	}
	var zrtp int
	for _, me := range out.media {
		for _, s := range me.GetStreams() {
			if s.GetTransport() == "ZRTP/SAVP" && !s.GetDecodable() {
				zrtp++
			}
		}
	}
	if zrtp == 0 {
		t.Fatal("no stream marked as ZRTP-protected")
	}
}

// TestPcapSIPInfoDigits: the digits sent in SIP INFO (application/
// dtmf-relay) become sealed metadata, in order; in PCI mode each is "*".
func TestPcapSIPInfoDigits(t *testing.T) {
	for _, pci := range []bool{false, true} {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		kr, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
		if err != nil {
			t.Fatal(err)
		}
		rep, out := ingestWith(t, cluster.ListenAddrs(), kr, "demo", "pcap/wireshark_DTMFsipinfo.pcap", nil, func(c *ingest.Config) { c.PCI = pci })
		cluster.Close()
		var digits string
		for _, m := range out.meta {
			dk := out.dks[m.GetPersonal().GetKeyId()]
			plain, err := kr.UnwrapDataKey(context.Background(), "demo", keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
			if err != nil {
				t.Fatal(err)
			}
			s, _ := seal.New("demo", dk.GetKeyId(), plain)
			b, err := s.Open(nil, "verbatim.v1.MetadataPersonal", m.GetPersonal())
			if err != nil {
				t.Fatal(err)
			}
			var p verbatimv1.MetadataPersonal
			mustUnmarshal(t, b, &p)
			for _, d := range p.GetDigits() {
				digits += d.GetDigits()
				if d.GetMethod() != "sip-info" || d.GetMasked() != pci {
					t.Fatalf("digit %v", d)
				}
			}
		}
		want := "1342"
		if pci {
			want = "****"
		}
		if digits != want || rep.Digits != 4 {
			t.Fatalf("PCI %v: digits %q (report %d), want %q", pci, digits, rep.Digits, want)
		}
	}
}

// TestPcapTransfersShareAConversation: Alice calls Bob; Bob transfers her
// blind to Carol with REFER (her INVITE to Carol carries Referred-By),
// then an attended transfer replaces that call (Replaces). All three calls
// carry the first call's conversation id; an unrelated call has its own.
func TestPcapTransfersShareAConversation(t *testing.T) {
	alice, bob, carol := netip.MustParseAddrPort("192.0.2.1:5060"), netip.MustParseAddrPort("192.0.2.2:5060"), netip.MustParseAddrPort("192.0.2.3:5060")
	msg := func(first, callID, from, to, cseq string, extra ...string) []byte {
		h := first + "\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK" + callID + cseq[:1] + "\r\nFrom: <" + from + ">;tag=f-" + callID +
			"\r\nTo: <" + to + ">" + map[bool]string{true: "", false: ";tag=t-" + callID}[strings.HasPrefix(first, "INVITE")] +
			"\r\nCall-ID: " + callID + "\r\nCSeq: " + cseq + "\r\n"
		for _, e := range extra {
			h += e + "\r\n"
		}
		return []byte(h + "Content-Length: 0\r\n\r\n")
	}
	pc := stacktest.NewSynth(t, 100*time.Millisecond)
	send := pc.Send
	call := func(src, dst netip.AddrPort, id, from, to string, extra ...string) {
		send(src, dst, msg("INVITE "+to+" SIP/2.0", id, from, to, "1 INVITE", extra...))
		send(dst, src, msg("SIP/2.0 200 OK", id, from, to, "1 INVITE"))
		send(src, dst, msg("ACK "+to+" SIP/2.0", id, from, to, "1 ACK"))
	}
	call(alice, bob, "call-a", "sip:alice@example.com", "sip:bob@example.com")
	send(bob, alice, msg("REFER sip:alice@example.com SIP/2.0", "call-a", "sip:bob@example.com", "sip:alice@example.com", "2 REFER",
		"Refer-To: <sip:carol@example.com>"))
	send(bob, alice, msg("BYE sip:alice@example.com SIP/2.0", "call-a", "sip:bob@example.com", "sip:alice@example.com", "3 BYE"))
	call(alice, carol, "call-b", "sip:alice@example.com", "sip:carol@example.com:5060", "Referred-By: <sip:bob@example.com>")
	call(bob, carol, "call-c", "sip:bob@example.com", "sip:carol@example.com", "Replaces: call-b;to-tag=t-call-b;from-tag=f-call-b")
	call(carol, bob, "call-d", "sip:carol@example.com", "sip:bob@example.com") // unrelated
	_, out := ingestFile(t, "", pc.Bytes())
	if len(out.started) != 4 {
		t.Fatalf("%d calls", len(out.started))
	}
	convs := map[string]int{}
	for _, st := range out.started {
		convs[st.GetConversationId()]++
	}
	if len(convs) != 2 {
		t.Fatalf("conversations %v: want the three linked calls in one, the unrelated call in its own", convs)
	}
	for conv, n := range convs {
		if n != 3 && n != 1 {
			t.Fatalf("conversation %s has %d calls", conv, n)
		}
	}
}

// TestPcapCodecChange: a re-INVITE moves the call from PCMU to PCMA. The
// streams' final description still has PCMU, so the packets sent before
// the change can be decoded.
func TestPcapCodecChange(t *testing.T) {
	caller, callee := netip.MustParseAddrPort("192.0.2.10:5060"), netip.MustParseAddrPort("192.0.2.20:5060")
	callerMedia, calleeMedia := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.20:50000")
	sdp := func(addr netip.AddrPort, pt int, name string) string {
		return stacktest.AudioSDP(addr, "RTP/AVP", pt, fmt.Sprintf("a=rtpmap:%d %s/8000", pt, name))
	}
	msg := func(first, cseq, body string) []byte {
		return stacktest.DialogMessage("codec-change@example.com", first, cseq, body)
	}
	pc := stacktest.NewSynth(t, 20*time.Millisecond)
	write := pc.Send
	rtpPkt := func(seq uint16, pt uint8) []byte { return rtpPacket(5, seq, pt) }
	write(caller, callee, msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", sdp(callerMedia, 0, "PCMU")))
	write(callee, caller, msg("SIP/2.0 200 OK", "1 INVITE", sdp(calleeMedia, 0, "PCMU")))
	write(caller, callee, msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
	for seq := uint16(1); seq <= 10; seq++ {
		write(callerMedia, calleeMedia, rtpPkt(seq, 0))
	}
	write(caller, callee, msg("INVITE sip:bob@example.com SIP/2.0", "2 INVITE", sdp(callerMedia, 8, "PCMA")))
	write(callee, caller, msg("SIP/2.0 200 OK", "2 INVITE", sdp(calleeMedia, 8, "PCMA")))
	for seq := uint16(11); seq <= 20; seq++ {
		write(callerMedia, calleeMedia, rtpPkt(seq, 8))
	}
	write(caller, callee, msg("BYE sip:bob@example.com SIP/2.0", "3 BYE", ""))
	_, out := ingestFile(t, "", pc.Bytes())
	if len(out.media) != 1 {
		t.Fatalf("%d calls", len(out.media))
	}
	for _, me := range out.media {
		for _, s := range me.GetStreams() {
			if s.GetStreamId() != "caller-audio" {
				continue
			}
			pts := map[uint32]string{}
			for _, c := range s.GetCodecs() {
				pts[c.GetPayloadType()] = c.GetName()
			}
			if pts[0] != "PCMU" || pts[8] != "PCMA" {
				t.Fatalf("caller-audio codecs %v: want PCMU (before the re-INVITE) and PCMA", pts)
			}
		}
	}
}

// TestPcapNATMedia: the caller is behind NAT: its SDP gives a private
// address that is never on the wire, and its RTP comes from the NAT's
// public address. The server sends back to that public address, from its
// own SDP address. Both directions are recorded in the SIP call (not as a
// call found by its RTP alone).
func TestPcapNATMedia(t *testing.T) {
	caller, server := netip.MustParseAddrPort("198.51.100.7:5060"), netip.MustParseAddrPort("203.0.113.9:5060")
	private, serverMedia := netip.MustParseAddrPort("10.0.0.5:4000"), netip.MustParseAddrPort("203.0.113.9:30000")
	nat := netip.MustParseAddrPort("198.51.100.7:62000")
	sdp := func(addr netip.AddrPort) string { return stacktest.AudioSDP(addr, "RTP/AVP", 0) }
	msg := func(first, cseq, body string) []byte {
		return stacktest.DialogMessage("nat@example.com", first, cseq, body)
	}
	pc := stacktest.NewSynth(t, 10*time.Millisecond)
	write := pc.Send
	rtpPkt := func(ssrc uint32, seq uint16) []byte { return rtpPacket(ssrc, seq, 0) }
	write(caller, server, msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", sdp(private)))
	write(server, caller, msg("SIP/2.0 200 OK", "1 INVITE", sdp(serverMedia)))
	write(caller, server, msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
	for seq := uint16(1); seq <= 50; seq++ {
		write(nat, serverMedia, rtpPkt(1, seq)) // matched by its destination
		write(serverMedia, nat, rtpPkt(2, seq)) // to the NAT's address: matched by its source
	}
	write(caller, server, msg("BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
	rep, out := ingestFile(t, "", pc.Bytes())
	if rep.Calls != 1 || rep.RTPOnlyCalls != 0 {
		t.Fatalf("calls %d, of which found by RTP alone %d: want the one SIP call", rep.Calls, rep.RTPOnlyCalls)
	}
	for _, me := range out.media {
		got := map[string]uint64{}
		for _, m := range me.GetMedia() {
			got[m.GetStreamId()] = m.GetPackets()
		}
		if got["caller-audio"] != 50 || got["callee-audio"] != 50 {
			t.Fatalf("packets per stream %v, want 50 each way", got)
		}
	}
}

// TestPcapForkedCall: a proxy forks the INVITE to two phones. Phone A
// answers 183 with early media (a ringback from its address), phone B
// answers 200 from another address and talks; A is cancelled. One call is
// recorded, and neither A's early media nor B's audio is lost.
func TestPcapForkedCall(t *testing.T) {
	caller, proxy := netip.MustParseAddrPort("192.0.2.10:5060"), netip.MustParseAddrPort("192.0.2.1:5060")
	callerMedia := netip.MustParseAddrPort("192.0.2.10:40000")
	phoneA, phoneB := netip.MustParseAddrPort("192.0.2.21:30000"), netip.MustParseAddrPort("192.0.2.22:30000")
	sdp := func(addr netip.AddrPort) string { return stacktest.AudioSDP(addr, "RTP/AVP", 0) }
	msg := func(first, toTag, cseq, body string) []byte {
		to := "<sip:group@example.com>"
		if toTag != "" {
			to += ";tag=" + toTag
		}
		ct := ""
		if body != "" {
			ct = "Content-Type: application/sdp\r\n"
		}
		return []byte(first + "\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" + cseq[:1] + "\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: " + to +
			"\r\nCall-ID: fork@example.com\r\nCSeq: " + cseq + "\r\n" + ct + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body)
	}
	pc := stacktest.NewSynth(t, 10*time.Millisecond)
	write := pc.Send
	rtpPkt := func(ssrc uint32, seq uint16) []byte { return rtpPacket(ssrc, seq, 0) }
	write(caller, proxy, msg("INVITE sip:group@example.com SIP/2.0", "", "1 INVITE", sdp(callerMedia)))
	write(proxy, caller, msg("SIP/2.0 183 Session Progress", "forkA", "1 INVITE", sdp(phoneA)))
	for seq := uint16(1); seq <= 30; seq++ { // A's ringback
		write(phoneA, callerMedia, rtpPkt(0xA, seq))
	}
	write(proxy, caller, msg("SIP/2.0 200 OK", "forkB", "1 INVITE", sdp(phoneB)))
	write(caller, proxy, msg("ACK sip:group@example.com SIP/2.0", "forkB", "1 ACK", ""))
	for seq := uint16(1); seq <= 50; seq++ { // the conversation with B
		write(phoneB, callerMedia, rtpPkt(0xB, seq))
		write(callerMedia, phoneB, rtpPkt(0xC, seq))
	}
	write(caller, proxy, msg("BYE sip:group@example.com SIP/2.0", "forkB", "2 BYE", ""))
	rep, out := ingestFile(t, "", pc.Bytes())
	if rep.Calls != 1 || rep.RTPOnlyCalls != 0 || rep.RTPPackets != 130 {
		t.Fatalf("calls %d (by RTP alone %d), RTP packets %d: want 1 call with all 130", rep.Calls, rep.RTPOnlyCalls, rep.RTPPackets)
	}
	for _, e := range out.ended {
		if e.GetReason() != verbatimv1.EndReason_END_REASON_BYE {
			t.Fatalf("ended by %v", e.GetReason())
		}
	}
}

// TestPcapRTPOnlyDetectionLosesNoCount: RTP found without SDP is confirmed
// after four packets in a row. A packet that breaks the run is given up
// and counted (never silently dropped), and the run restarts with the
// packet that broke it, so it is kept.
func TestPcapRTPOnlyDetectionLosesNoCount(t *testing.T) {
	src, dst := netip.MustParseAddrPort("192.0.2.1:4000"), netip.MustParseAddrPort("192.0.2.2:5000")
	pc := stacktest.NewSynth(t, 20*time.Millisecond)
	pc.Send(src, dst, rtpPacket(9, 1, 0))
	for seq := uint16(3); seq <= 20; seq++ { // seq 2 was lost on the wire
		pc.Send(src, dst, rtpPacket(9, seq, 0))
	}
	rep, _ := ingestFile(t, "", pc.Bytes())
	if rep.RTPOnlyCalls != 1 || rep.RTPPackets != 18 || rep.UnmatchedUDP != 1 {
		t.Fatalf("calls by RTP %d, RTP packets %d, unmatched %d: want 1, 18 (seq 3-20), 1 (seq 1, counted)",
			rep.RTPOnlyCalls, rep.RTPPackets, rep.UnmatchedUDP)
	}
}

// TestPcapIPv6FragmentedInvite: a call entirely over IPv6 whose INVITE
// (a long SDP, as SBCs send) is fragmented, the fragments out of order.
// The INVITE is reassembled, the IPv6 SDP addresses are followed, and the
// RTP over IPv6 is recorded.
func TestPcapIPv6FragmentedInvite(t *testing.T) {
	caller, callee := netip.MustParseAddrPort("[2001:db8::10]:5060"), netip.MustParseAddrPort("[2001:db8::20]:5060")
	callerMedia, calleeMedia := netip.MustParseAddrPort("[2001:db8::10]:40000"), netip.MustParseAddrPort("[2001:db8::20]:50000")
	sdp6 := func(addr netip.AddrPort, extra int) string {
		s := fmt.Sprintf("v=0\r\no=- 1 1 IN IP6 %s\r\ns=-\r\nc=IN IP6 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", addr.Addr(), addr.Addr(), addr.Port())
		for i := range extra {
			s += fmt.Sprintf("a=x-vendor-%03d:%s\r\n", i, strings.Repeat("v", 40))
		}
		return s
	}
	msg := func(first, cseq, body string) []byte {
		return stacktest.DialogMessage("v6-1@example.com", first, cseq, body)
	}
	pc := stacktest.NewSynth(t, 10*time.Millisecond)
	invite := msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", sdp6(callerMedia, 60))
	if len(invite) < 3000 {
		t.Fatalf("INVITE of %d bytes: not fragmented enough", len(invite))
	}
	sendFragmented6(t, pc, caller, callee, invite, 1448, 0x1234, 2, 0, 1) // the last first
	pc.Send(callee, caller, msg("SIP/2.0 200 OK", "1 INVITE", sdp6(calleeMedia, 0)))
	pc.Send(caller, callee, msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
	for seq := uint16(1); seq <= 50; seq++ {
		pc.Send(callerMedia, calleeMedia, rtpPacket(11, seq, 0))
		pc.Send(calleeMedia, callerMedia, rtpPacket(22, seq, 0))
	}
	pc.Send(caller, callee, msg("BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
	rep, out := ingestFile(t, "", pc.Bytes())
	if rep.Calls != 1 || rep.RTPOnlyCalls != 0 || rep.RTPPackets != 100 || rep.Pcap.Reassembled != 1 || rep.Pcap.FragmentsLost != 0 {
		t.Fatalf("calls %d (%d RTP only), RTP %d, pcap %+v", rep.Calls, rep.RTPOnlyCalls, rep.RTPPackets, rep.Pcap)
	}
	// Both directions were matched to the SDP's IPv6 addresses: a stream
	// each, as the SDP described it, 50 packets each.
	for id, bs := range out.batches {
		per := map[string]uint32{}
		for _, b := range bs {
			per[b.GetStreamId()] += b.GetPacketCount()
		}
		if len(per) != 2 || per["caller-audio"] != 50 || per["callee-audio"] != 50 {
			t.Fatalf("call %s: packets per stream %v", id, per)
		}
	}
	for _, e := range out.ended {
		if e.GetReason() != verbatimv1.EndReason_END_REASON_BYE {
			t.Fatalf("ended by %v", e.GetReason())
		}
	}
}

// TestPcapUnansweredInvitesExpire: 500 INVITEs nobody answers (a flood,
// or responses never captured), then, four minutes later, a call that is
// answered. The 500 are ended as timed out once the INVITE timeout
// passes without SIP or RTP, and counted, so a flood is not kept for
// ever; the answered call is recorded as usual. Of a shorter gap than the
// timeout nothing is expired.
func TestPcapUnansweredInvitesExpire(t *testing.T) {
	caller, callee := netip.MustParseAddrPort("192.0.2.10:5060"), netip.MustParseAddrPort("192.0.2.20:5060")
	callerMedia, calleeMedia := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.20:50000")
	capture := func(gap time.Duration) []byte {
		s := stacktest.NewSynth(t, time.Millisecond)
		for i := range 500 {
			s.Send(caller, callee, stacktest.DialogMessage(fmt.Sprintf("flood-%d@example.com", i), "INVITE sip:bob@example.com SIP/2.0", "1 INVITE",
				stacktest.AudioSDP(callerMedia, "RTP/AVP", 0)))
		}
		s.Wait(gap)
		msg := func(first, cseq, body string) []byte {
			return stacktest.DialogMessage("answered@example.com", first, cseq, body)
		}
		s.Send(caller, callee, msg("INVITE sip:bob@example.com SIP/2.0", "1 INVITE", stacktest.AudioSDP(callerMedia, "RTP/AVP", 0)))
		s.Send(callee, caller, msg("SIP/2.0 200 OK", "1 INVITE", stacktest.AudioSDP(calleeMedia, "RTP/AVP", 0)))
		s.Send(caller, callee, msg("ACK sip:bob@example.com SIP/2.0", "1 ACK", ""))
		for n := range 50 {
			s.Send(callerMedia, calleeMedia, stacktest.AudioPacket(0x1000, uint16(100+n), 0, 0x10))
		}
		s.Send(caller, callee, msg("BYE sip:bob@example.com SIP/2.0", "2 BYE", ""))
		return s.Bytes()
	}
	rep, out := ingestFile(t, "flood.pcap", capture(4*time.Minute))
	if rep.InvitesExpired != 500 {
		t.Fatalf("%d INVITEs expired, want 500: %+v", rep.InvitesExpired, rep)
	}
	t.Logf("%d calls started, %d ended; %d INVITEs expired", len(out.started), len(out.ended), rep.InvitesExpired)
	// The answered call is the one with media; the others flooded.
	timedOut, withMedia := 0, 0
	var answered uint32
	for id := range out.started {
		e := out.ended[id]
		if e == nil {
			t.Fatalf("call %s never ended", id)
		}
		if len(out.batches[id]) > 0 {
			withMedia++
			for _, b := range out.batches[id] {
				answered += b.GetPacketCount()
			}
			continue
		}
		if e.GetReason() == verbatimv1.EndReason_END_REASON_TIMEOUT {
			timedOut++
		}
	}
	if len(out.started) > 1 && timedOut != len(out.started)-1 {
		t.Fatalf("%d of %d flooding calls ended as timed out", timedOut, len(out.started)-1)
	}
	if withMedia != 1 || answered != 50 {
		t.Fatalf("%d calls with media, %d packets; want the answered one's 50", withMedia, answered)
	}
	if rep, _ := ingestFile(t, "short.pcap", capture(time.Minute)); rep.InvitesExpired != 0 {
		t.Fatalf("a minute's gap expired %d INVITEs", rep.InvitesExpired)
	}
}
