package processors_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/processors"
	g729dec "github.com/verbatimrec/verbatim/processors/internal/g729"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// pipeline is ingest and process against one Kafka, key manager and store.
type pipeline struct {
	t       *testing.T
	brokers []string
	km      keys.Manager
	store   objstore.Store
	tenant  string
	group   string
	// srtpKeys are given to ingest.
	srtpKeys []ingest.SRTPKey
	// pci records every tenant in PCI mode.
	pci bool
	// retention locks every tenant's objects for that long.
	retention time.Duration
	// digits holds, per call, the DTMF recordings() read from metadata.
	digits map[string][]*verbatimv1.EnteredDigits
	// producer wraps ingest's Kafka client, to lose records on purpose.
	producer func(ingest.Producer) ingest.Producer
	// failures holds the RecordingFailed events recordings() read.
	failures []*verbatimv1.RecordingFailed
	// cluster is the kfake cluster of kfakePipeline, for injecting faults.
	cluster *kfake.Cluster
	// objects is the directory of kfakePipeline's store.
	objects string
	// spool, if set, is the processor's spool directory (default a new
	// one for each run).
	spool string
}

func (p *pipeline) kafka() kafkaclient.Config { return stacktest.KafkaFor(p.brokers, "") }

func (p *pipeline) ingest(name string) ingest.Report {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kafkaclient.New(p.kafka())
	if err != nil {
		p.t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		p.t.Fatal(err)
	}
	f, err := os.Open(stacktest.SharedTestdata(p.t, name))
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	var prod ingest.Producer = cl
	if p.producer != nil {
		prod = p.producer(cl)
	}
	rep, err := ingest.Pcap(ctx, ingest.Config{Tenant: p.tenant, Keys: p.km, Producer: prod, SRTPKeys: p.srtpKeys}, f)
	if err != nil {
		p.t.Fatalf("ingest %s: %v", name, err)
	}
	return rep
}

// process runs the processor until the media topic is idle, or until stop
// returns true after a committed transaction (a crash: nothing more is
// done, nothing is cleaned up in Kafka).
func (p *pipeline) process(stop func(processors.Stats) bool) processors.Stats {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spool := p.spool
	if spool == "" {
		spool = p.t.TempDir()
	}
	cfg := processors.Config{Kafka: p.kafka(), Group: p.group, Instance: p.group + "-1", Keys: p.km, Store: p.store, Tenants: []string{p.tenant},
		SpoolDir: spool, ExitWhenCaughtUp: true, MaxPollRecords: 3}
	if p.pci {
		cfg.PCI = func(string) bool { return true }
	}
	if p.retention > 0 {
		cfg.Retention = func(string) time.Duration { return p.retention }
	}
	if stop != nil {
		cfg.Progress = func(s processors.Stats) {
			if stop(s) {
				cancel()
			}
		}
	}
	st, err := processors.Run(ctx, cfg)
	if err != nil {
		p.t.Fatalf("process: %v (stats %+v)", err, st)
	}
	return st
}

// processErr runs the processor until the media topic is read to its end,
// and returns its error.
func (p *pipeline) processErr() (processors.Stats, error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return processors.Run(ctx, processors.Config{Kafka: p.kafka(), Group: p.group, Instance: p.group + "-1", Keys: p.km, Store: p.store,
		Tenants: []string{p.tenant}, SpoolDir: p.t.TempDir(), ExitWhenCaughtUp: true, MaxPollRecords: 3})
}

type stored struct {
	ev  *verbatimv1.RecordingStored
	wav []byte
	key []byte // the recording key, unwrapped
}

// recordings reads every committed RecordingStored of the tenant, fetches
// and checks each object, and opens it with its key from the registry.
func (p *pipeline) recordings() (map[string][]stored, []*kgo.Record) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kafkaclient.New(p.kafka(), kgo.ConsumeTopics(schemas.TopicRecordings, schemas.TopicKeys, schemas.TopicMedia, schemas.TopicCalls, schemas.TopicMetadata),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		p.t.Fatal(err)
	}
	defer cl.Close()
	var all []*kgo.Record
	dks := map[string]*verbatimv1.DataKey{}
	var evs []*verbatimv1.RecordingStored
	var mds []*verbatimv1.MetadataAttached
	stacktest.ReadBack(ctx, p.t, cl, func(r *kgo.Record) {
		env, err := schemas.ParseHeaders(r.Headers)
		if err != nil || env.Tenant != p.tenant {
			return
		}
		all = append(all, r)
		switch env.Type {
		case "verbatim.v1.DataKey":
			dk := &verbatimv1.DataKey{}
			mustUnmarshal(p.t, r.Value, dk)
			dks[dk.GetKeyId()] = dk
		case "verbatim.v1.RecordingStored":
			ev := &verbatimv1.RecordingStored{}
			mustUnmarshal(p.t, r.Value, ev)
			evs = append(evs, ev)
		case "verbatim.v1.MetadataAttached":
			md := &verbatimv1.MetadataAttached{}
			mustUnmarshal(p.t, r.Value, md)
			mds = append(mds, md)
		case "verbatim.v1.RecordingFailed":
			ev := &verbatimv1.RecordingFailed{}
			mustUnmarshal(p.t, r.Value, ev)
			p.failures = append(p.failures, ev)
		}
	}, schemas.TopicRecordings, schemas.TopicKeys, schemas.TopicMedia, schemas.TopicCalls, schemas.TopicMetadata)
	p.digits = map[string][]*verbatimv1.EnteredDigits{}
	for _, md := range mds {
		dk := dks[md.GetPersonal().GetKeyId()]
		if dk == nil {
			p.t.Fatalf("metadata of call %s: no call key", md.GetCallId())
		}
		plain, err := p.km.UnwrapDataKey(ctx, p.tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
		if err != nil {
			p.t.Fatal(err)
		}
		s, err := seal.New(p.tenant, dk.GetKeyId(), plain)
		if err != nil {
			p.t.Fatal(err)
		}
		b, err := s.Open(nil, "verbatim.v1.MetadataPersonal", md.GetPersonal())
		if err != nil {
			p.t.Fatal(err)
		}
		var personal verbatimv1.MetadataPersonal
		mustUnmarshal(p.t, b, &personal)
		p.digits[md.GetCallId()] = append(p.digits[md.GetCallId()], personal.GetDigits()...)
	}
	out := map[string][]stored{}
	for _, ev := range evs {
		dk := dks[ev.GetKey().GetKeyId()]
		if dk == nil {
			p.t.Fatalf("recording %s: key %s not in the registry", ev.GetRecordingId(), ev.GetKey().GetKeyId())
		}
		rc, _, err := p.store.Get(ctx, ev.GetObjectKey())
		if err != nil {
			p.t.Fatal(err)
		}
		sealed, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			p.t.Fatal(err)
		}
		if sum := sha256.Sum256(sealed); !bytes.Equal(sum[:], ev.GetCiphertextSha256()) {
			p.t.Fatalf("recording %s: stored ciphertext does not match its announced SHA-256", ev.GetObjectKey())
		}
		plain, err := p.km.UnwrapDataKey(ctx, p.tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
		if err != nil {
			p.t.Fatal(err)
		}
		r, err := processors.OpenRecording(bytes.NewReader(sealed), plain, p.tenant, ev.GetObjectKey())
		if err != nil {
			p.t.Fatal(err)
		}
		wav, err := io.ReadAll(r)
		if err != nil {
			p.t.Fatal(err)
		}
		if sum := sha256.Sum256(wav); !bytes.Equal(sum[:], ev.GetPlaintextSha256()) {
			p.t.Fatalf("recording %s: plaintext does not match its announced SHA-256", ev.GetObjectKey())
		}
		out[ev.GetCallId()] = append(out[ev.GetCallId()], stored{ev: ev, wav: wav, key: plain})
	}
	return out, all
}

func mustUnmarshal(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

func kfakePipeline(t *testing.T) *pipeline {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	dir := t.TempDir()
	kr, err := keys.OpenKeyring(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return &pipeline{t: t, brokers: cluster.ListenAddrs(), km: kr, store: store, tenant: "demo", group: "verbatim-process", cluster: cluster,
		objects: filepath.Join(dir, "objects")}
}

// The MANIFEST's digests of the two one-way streams of the G.711 capture,
// decoded to 16-bit little-endian PCM.
var g711PCM = map[string]string{
	"PCMU": "74b16195a4ab422b255a60446cee37540d289a5fbdbc863a48906b893a1db899",
	"PCMA": "98822cb3e5957db5a13c85a950123cf89b0b7aee6a0f5b5e39d0e462b320c3d2",
}

// checkG711 checks the two recordings of wireshark_sip-rtp-g711.pcap: one
// per call, each holding its stream's audio sample for sample on one
// channel, silence on the other, and a completeness report with no loss.
func checkG711(t *testing.T, recs map[string][]stored) {
	t.Helper()
	if len(recs) != 2 {
		t.Fatalf("%d calls recorded, want 2", len(recs))
	}
	seen := map[string]bool{}
	for call, rs := range recs {
		if len(rs) != 1 {
			t.Fatalf("call %s announced %d times", call, len(rs))
		}
		ev, wav := rs[0].ev, rs[0].wav
		if ev.GetRawObjectKey() == "" || ev.GetRawSize() == 0 || ev.GetCallStartedAt() == nil {
			t.Errorf("call %s: raw media not stored: %v", call, ev)
		}
		if want := "/2016/11/26/" + call + "/" + ev.GetRecordingId() + ".wav.sealed"; !strings.HasSuffix(ev.GetObjectKey(), want) {
			t.Errorf("object key %s, want tenant%s", ev.GetObjectKey(), want)
		}
		// Both directions were negotiated; only one sent RTP.
		var c *verbatimv1.StreamCompleteness
		for _, sc := range ev.GetCompleteness() {
			if sc.GetPacketsCaptured() > 0 {
				c = sc
			}
		}
		if len(ev.GetCompleteness()) != 2 || c == nil {
			t.Fatalf("call %s: completeness %v", call, ev.GetCompleteness())
		}
		if c.GetPacketsCaptured() != c.GetPacketsInRecording() || len(c.GetGaps()) != 0 || c.GetBatchesSent() == 0 || c.GetBatchesSent() != c.GetBatchesReceived() {
			t.Errorf("call %s: completeness %v", call, c)
		}
		if cs := schemas.Summarize(ev.GetLedgers()); cs.Status != schemas.StatusComplete || cs.AudioRecorded != c.GetPacketsCaptured() {
			t.Errorf("call %s: %s, ledgers %v", call, cs, ev.GetLedgers())
		}
		left, right := channels(t, wav)
		audio, silent := left, right
		if isSilent(left) {
			audio, silent = right, left
		}
		if !isSilent(silent) {
			t.Errorf("call %s: both channels hold sound; the capture is one-way", call)
		}
		var codec string
		switch c.GetPacketsCaptured() {
		case 425:
			codec = "PCMU"
		case 414:
			codec = "PCMA"
		default:
			t.Fatalf("call %s: %d packets", call, c.GetPacketsCaptured())
		}
		n := int(c.GetPacketsCaptured()) * 160
		if len(audio) < n {
			t.Fatalf("call %s: %d samples, want %d", call, len(audio), n)
		}
		sum := sha256.Sum256(pcmBytes(audio[:n]))
		if got := hex.EncodeToString(sum[:]); got != g711PCM[codec] {
			t.Errorf("call %s (%s): channel PCM digest %s, MANIFEST says %s", call, codec, got, g711PCM[codec])
		}
		seen[codec] = true
		wantReason := verbatimv1.EndReason_END_REASON_BYE
		if codec == "PCMA" {
			wantReason = verbatimv1.EndReason_END_REASON_TIMEOUT // no BYE in the capture
		}
		if ev.GetEndReason() != wantReason {
			t.Errorf("call %s: end reason %v, want %v", call, ev.GetEndReason(), wantReason)
		}
	}
	if !seen["PCMU"] || !seen["PCMA"] {
		t.Fatalf("codecs recorded: %v", seen)
	}
}

func channels(t *testing.T, wav []byte) (l, r []int16) {
	t.Helper()
	if len(wav) < 44 || string(wav[:4]) != "RIFF" || string(wav[8:12]) != "WAVE" || binary.LittleEndian.Uint16(wav[22:]) != 2 {
		t.Fatalf("not a stereo WAV: % x", wav[:min(len(wav), 44)])
	}
	for o := 44; o+4 <= len(wav); o += 4 {
		l = append(l, int16(binary.LittleEndian.Uint16(wav[o:])))
		r = append(r, int16(binary.LittleEndian.Uint16(wav[o+2:])))
	}
	return l, r
}

func isSilent(s []int16) bool {
	for _, v := range s {
		if v != 0 {
			return false
		}
	}
	return true
}

func pcmBytes(s []int16) []byte {
	b := make([]byte, 0, 2*len(s))
	for _, v := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}

func TestProcessG711(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	st := p.process(nil)
	t.Logf("stats %+v", st)
	if st.Recorded != 2 || st.Open != 0 || st.Rejected != 0 {
		t.Fatalf("stats %+v", st)
	}
	recs, all := p.recordings()
	checkG711(t, recs)
	noPlaintext(t, p, recs, all)

	// Another run of the group has nothing left to do.
	if st := p.process(nil); st.Recorded != 0 || st.Records != 0 {
		t.Fatalf("second run: %+v", st)
	}
}

// TestProcessReclaimsACrashedSpool: what a run of the same instance
// killed with -9 left in its spool (two files) is removed at the next
// start and counted, once that run is fenced; another instance's spool
// in the same directory is left alone; the calls are recorded.
func TestProcessReclaimsACrashedSpool(t *testing.T) {
	p := kfakePipeline(t)
	p.spool = t.TempDir()
	mine, other := filepath.Join(p.spool, "verbatim-process-"+p.group+"-1"), filepath.Join(p.spool, "verbatim-process-another")
	for path, size := range map[string]int{filepath.Join(mine, "spool-1"): 1000, filepath.Join(mine, "raw-2"): 24, filepath.Join(other, "spool-3"): 7} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	st := p.process(nil)
	if st.ReclaimedFiles != 2 || st.ReclaimedBytes != 1024 || st.Recorded != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := os.Stat(filepath.Join(other, "spool-3")); err != nil {
		t.Fatalf("another instance's spool: %v", err)
	}
	if _, err := os.Stat(mine); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the instance's spool after a clean run: %v", err)
	}
}

// TestProcessKilledMidCall stops the processor after a committed
// transaction while a call is open, then starts it again: the call is
// rebuilt from its checkpoint and each call is recorded exactly once, with
// the same audio.
func TestProcessKilledMidCall(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	var kills atomic.Int32
	first := p.process(func(s processors.Stats) bool {
		if s.Open > 0 && s.Batches >= 4 {
			kills.Add(1)
			return true
		}
		return false
	})
	if kills.Load() != 1 || first.Open == 0 {
		t.Fatalf("the processor was not stopped with a call open: %+v", first)
	}
	second := p.process(nil)
	t.Logf("first run %+v; second run %+v", first, second)
	if second.Replayed == 0 {
		t.Fatal("the restarted processor rebuilt nothing")
	}
	if first.Recorded+second.Recorded != 2 {
		t.Fatalf("recorded %d + %d, want 2 in all", first.Recorded, second.Recorded)
	}
	recs, _ := p.recordings()
	checkG711(t, recs)
}

// noPlaintext scans every record and stored object for content that must
// only exist sealed: the capture's SIP identities and its raw audio.
func noPlaintext(t *testing.T, p *pipeline, stored map[string][]stored, recs []*kgo.Record) {
	t.Helper()
	secrets := [][]byte{[]byte("sip:"), []byte("sipp@"), []byte("1-1966@"), []byte("10.0.2.20"), []byte("FreeSWITCH"), []byte("RIFF")}
	// A run of audio as it is on the wire: 16 payload bytes of the first
	// PCMU packet.
	stacktest.EachRTP(t, "pcap/wireshark_sip-rtp-g711.pcap", 0x343DA99B, func(pkt *rtp.Packet) {
		if len(secrets) == 6 {
			secrets = append(secrets, append([]byte(nil), pkt.Payload[40:56]...))
		}
	})
	check := func(where string, b []byte) {
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				t.Fatalf("%s holds plaintext %q", where, s)
			}
		}
	}
	for _, r := range recs {
		check(r.Topic+" record", r.Value)
		check(r.Topic+" key", r.Key)
	}
	ctx := context.Background()
	for call, rs := range stored {
		for _, k := range []string{rs[0].ev.GetObjectKey(), rs[0].ev.GetRawObjectKey()} {
			rc, _, err := p.store.Get(ctx, k)
			if err != nil {
				t.Fatalf("call %s: %v", call, err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			check("object "+k, b)
		}
	}
}

// TestProcessRealStack runs capture, crash, restart and playback checks on
// the local stack: Kafka transactions, MinIO with object lock, Vault
// Transit keys. The group starts at the topics' current end, so earlier
// runs' media is not processed again.
func TestProcessRealStack(t *testing.T) {
	ctx := context.Background()
	brokers := strings.Split(stacktest.Env(t, "VERBATIM_KAFKA_BROKERS"), ",")
	km, err := keys.NewVault(keys.VaultConfig{Address: stacktest.Env(t, "VERBATIM_VAULT_ADDR"), CAFile: os.Getenv("VERBATIM_VAULT_CA"),
		Token: stacktest.Env(t, "VERBATIM_VAULT_TOKEN"), CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	store, err := objstore.NewS3(ctx, objstore.S3Config{Endpoint: stacktest.Env(t, "VERBATIM_S3_ENDPOINT"),
		Bucket: stacktest.Env(t, "VERBATIM_S3_BUCKET"), AccessKey: stacktest.Env(t, "VERBATIM_S3_ACCESS_KEY"),
		SecretKey: stacktest.Env(t, "VERBATIM_S3_SECRET_KEY"), Insecure: os.Getenv("VERBATIM_S3_INSECURE") == "true",
		CAFile: os.Getenv("VERBATIM_S3_CA")})
	if err != nil {
		t.Fatal(err)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	p := &pipeline{t: t, brokers: brokers, km: km, store: store, tenant: "t" + run, group: "verbatim-process-test-" + run}
	startGroupAtEnd(t, p)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	first := p.process(func(s processors.Stats) bool { return s.Open > 0 && s.Batches >= 4 })
	second := p.process(nil)
	t.Logf("first run %+v; second run %+v", first, second)
	if first.Open == 0 || second.Replayed == 0 {
		t.Fatalf("no crash with a call open, or nothing rebuilt: %+v, %+v", first, second)
	}
	recs, all := p.recordings()
	checkG711(t, recs)
	noPlaintext(t, p, recs, all)
}

// startGroupAtEnd commits the group's offsets at the media topic's end.
func startGroupAtEnd(t *testing.T, p *pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafkaclient.New(p.kafka())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	stacktest.StartGroupAtEnd(ctx, t, cl, p.group, schemas.TopicMedia)
}

// TestProcessUndecodableCodecKeptRaw: a G.729 call is still recorded: the
// WAV has silence, the completeness report says why, and the raw media
// object holds every packet, still sealed.
func TestProcessUndecodableCodecKeptRaw(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g729a.pcap")
	if st := p.process(nil); st.Recorded != 1 {
		t.Fatalf("stats %+v", st)
	}
	recs, _ := p.recordings()
	if len(recs) != 1 {
		t.Fatalf("%d recordings", len(recs))
	}
	for _, rs := range recs {
		ev := rs[0].ev
		var sc *verbatimv1.StreamCompleteness
		for _, c := range ev.GetCompleteness() {
			if c.GetPacketsCaptured() > 0 {
				sc = c
			}
		}
		if g729dec.Available { // built with libbcg729: see TestProcessG729
			t.Skip("this build decodes G.729")
		}
		if sc == nil || sc.GetPacketsCaptured() != 425 || !strings.Contains(sc.GetNotDecoded(), "G729") {
			t.Fatalf("completeness %v", ev.GetCompleteness())
		}
		rc, info, err := p.store.Get(context.Background(), ev.GetRawObjectKey())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(rc)
		rc.Close()
		var packets uint32
		for b := raw; len(b) > 0; {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				t.Fatalf("raw media object is not length-prefixed PacketBatches")
			}
			var pb verbatimv1.PacketBatch
			mustUnmarshal(t, b[k:k+int(n)], &pb)
			packets += pb.GetPacketCount()
			b = b[k+int(n):]
		}
		if packets != 425 || info.Size != int64(ev.GetRawSize()) || !bytes.Equal(info.SHA256, ev.GetRawSha256()) {
			t.Fatalf("raw object: %d packets, %d bytes (announced %d)", packets, info.Size, ev.GetRawSize())
		}
		left, right := channels(t, rs[0].wav)
		if !isSilent(left) || !isSilent(right) {
			t.Fatal("undecoded audio is not silence")
		}
	}
}

// dropKeys is a producer that loses every data key: what a registry that
// lost a key looks like to the processor.
type dropKeys struct{ ingest.Producer }

func (d dropKeys) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if r.Topic == schemas.TopicKeys {
		promise(r, nil)
		return
	}
	d.Producer.Produce(ctx, r, promise)
}

// TestProcessMissingKeyFails: calls whose data key never reaches the
// registry are announced as failed, with the reason, and their raw media
// is stored; the processor goes on with the next calls.
func TestProcessMissingKeyFails(t *testing.T) {
	p := kfakePipeline(t)
	p.producer = func(pr ingest.Producer) ingest.Producer { return dropKeys{pr} }
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	p.producer = nil
	p.ingest("pcap/wireshark_sip-rtp-g729a.pcap")
	st := p.process(nil)
	if st.Failed != 2 || st.Recorded != 1 {
		t.Fatalf("stats %+v: want 2 failed, 1 recorded", st)
	}
	recs, _ := p.recordings()
	if len(recs) != 1 || len(p.failures) != 2 {
		t.Fatalf("%d recordings, %d failures", len(recs), len(p.failures))
	}
	for _, f := range p.failures {
		if !strings.Contains(f.GetReason(), "not in the key registry") || f.GetRawSize() == 0 {
			t.Errorf("failure %v", f)
		}
		rc, info, err := p.store.Get(context.Background(), f.GetRawObjectKey())
		if err != nil {
			t.Fatalf("raw media of a failed call: %v", err)
		}
		rc.Close()
		if !bytes.Equal(info.SHA256, f.GetRawSha256()) {
			t.Errorf("raw object digest differs from the event")
		}
	}
}

// TestProcessRTPOnly: SIPp's A-law sample has no SIP; its stream is still
// recorded, and the channel equals the MANIFEST's PCM digest.
func TestProcessRTPOnly(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/sipp_g711a.pcap")
	if st := p.process(nil); st.Recorded != 1 {
		t.Fatalf("stats %+v", st)
	}
	recs, _ := p.recordings()
	for call, rs := range recs {
		left, right := channels(t, rs[0].wav)
		if !isSilent(right) || len(left) < 236*240 {
			t.Fatalf("call %s: %d samples left, right silent %v", call, len(left), isSilent(right))
		}
		sum := sha256.Sum256(pcmBytes(left[:236*240]))
		if got := hex.EncodeToString(sum[:]); got != "dcdd5c87686c3566fcb8e5a04797c879b2168c9e0f790e6c8ac2ad3e1f77bb3e" {
			t.Fatalf("PCM digest %s differs from the MANIFEST's", got)
		}
	}
	if len(recs) != 1 {
		t.Fatalf("%d recordings", len(recs))
	}
}

// TestProcessSRTP: the SRTP sample, decrypted at capture with its known
// key, is recorded; its 237.76 s of audio equal the MANIFEST's digest of
// the decrypted stream, decoded.
func TestProcessSRTP(t *testing.T) {
	p := kfakePipeline(t)
	key, err := ingest.ParseSRTPKey("AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz")
	if err != nil {
		t.Fatal(err)
	}
	p.srtpKeys = []ingest.SRTPKey{key}
	p.ingest("srtp/marseillaise-srtp.pcap")
	if st := p.process(nil); st.Recorded != 1 {
		t.Fatalf("stats %+v", st)
	}
	recs, _ := p.recordings()
	for _, rs := range recs {
		left, _ := channels(t, rs[0].wav)
		const n = 11888 * 160
		if len(left) < n {
			t.Fatalf("%d samples", len(left))
		}
		sum := sha256.Sum256(pcmBytes(left[:n]))
		if got := hex.EncodeToString(sum[:]); got != "82161ad840ebec05699eb524cb0650b47800b413714fc2ce5736e00c6774891c" {
			t.Fatalf("decrypted audio digest %s differs from the MANIFEST's", got)
		}
		c := rs[0].ev.GetCompleteness()[0]
		if c.GetPacketsInRecording() != 11888 || c.GetSrtpAuthFailures() != 0 {
			t.Fatalf("completeness %v", c)
		}
	}
}

func digitString(ds []*verbatimv1.EnteredDigits) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.GetDigits())
	}
	return b.String()
}

// TestProcessDTMF: RFC 4733 digits become metadata with their times: on
// SIP_DTMF2 (telephone-event declared on PT 96) and on Metaswitch's RTP
// found without SDP (PT 101, recognised by its event payloads), the digits
// the MANIFEST lists.
func TestProcessDTMF(t *testing.T) {
	for _, c := range []struct{ file, digits string }{
		{"pcap/wireshark_SIP_DTMF2.cap", "6789123"},
		{"pcap/metaswitch_09a_2833_dtmf.pcap", "123456789**0#"},
	} {
		p := kfakePipeline(t)
		p.ingest(c.file)
		p.process(nil)
		p.recordings()
		var got []string
		for _, ds := range p.digits {
			got = append(got, digitString(ds))
			for _, d := range ds {
				if d.GetMethod() != "rfc4733" || d.GetMasked() || d.GetAt() == nil {
					t.Fatalf("%s: digit %v", c.file, d)
				}
			}
		}
		if len(got) != 1 || got[0] != c.digits {
			t.Fatalf("%s: digits %q, want %q", c.file, got, c.digits)
		}
	}
}

// TestProcessPCI: in PCI mode the digits are stored masked, the tones are
// silenced in the recording, and no raw media is kept.
func TestProcessPCI(t *testing.T) {
	nonZero := func(s []int16) (n int) {
		for _, v := range s {
			if v != 0 {
				n++
			}
		}
		return n
	}
	var sound [2]int
	for i, pci := range []bool{false, true} {
		p := kfakePipeline(t)
		p.pci = pci
		p.ingest("pcap/metaswitch_09a_2833_dtmf.pcap")
		p.process(nil)
		recs, all := p.recordings()
		for call, rs := range recs {
			left, _ := channels(t, rs[0].wav)
			sound[i] = nonZero(left)
			if got := digitString(p.digits[call]); pci && (got != "*************" || !p.digits[call][0].GetMasked()) {
				t.Fatalf("PCI digits %q", got)
			}
			if pci != (rs[0].ev.GetRawObjectKey() == "") {
				t.Fatalf("PCI %v: raw object %q", pci, rs[0].ev.GetRawObjectKey())
			}
		}
		if pci {
			// The digits' events are in no record in any readable form.
			for _, r := range all {
				if bytes.Contains(r.Value, []byte("123456789")) {
					t.Fatalf("%s holds the digits", r.Topic)
				}
			}
		}
	}
	// 13 events of at least 100 ms each, plus guards: more than a second
	// of audio silenced.
	if sound[0]-sound[1] < 8000 {
		t.Fatalf("PCI silenced %d samples, want the tones' (over 8000)", sound[0]-sound[1])
	}
	t.Logf("PCI silenced %d of %d sounding samples", sound[0]-sound[1], sound[0])
}

// TestProcessOpus: an Opus call is kept as Ogg Opus in its own sealed
// object, not transcoded: every one of its 425 packets, 53,618 bytes of
// payload (MANIFEST), in pages whose CRCs check.
func TestProcessOpus(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-opus.pcap")
	if st := p.process(nil); st.Recorded != 1 {
		t.Fatalf("stats %+v", st)
	}
	recs, all := p.recordings()
	for _, rs := range recs {
		objs := rs[0].ev.GetStreamObjects()
		if len(objs) != 1 || objs[0].GetFormat() != "audio/ogg; codecs=opus" {
			t.Fatalf("stream objects %v", objs)
		}
		rc, _, err := p.store.Get(context.Background(), objs[0].GetObjectKey())
		if err != nil {
			t.Fatal(err)
		}
		sealed, _ := io.ReadAll(rc)
		rc.Close()
		if sum := sha256.Sum256(sealed); !bytes.Equal(sum[:], objs[0].GetCiphertextSha256()) {
			t.Fatal("Ogg object's ciphertext digest differs from the event")
		}
		r, err := processors.OpenRecording(bytes.NewReader(sealed), rs[0].key, p.tenant, objs[0].GetObjectKey())
		if err != nil {
			t.Fatal(err)
		}
		ogg, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		var pages, audio int
		for b := ogg; len(b) > 0; pages++ {
			if len(b) < 27 || string(b[:4]) != "OggS" {
				t.Fatalf("page %d is not an Ogg page", pages)
			}
			n, size := int(b[26]), 27+int(b[26])
			for _, l := range b[27 : 27+n] {
				size += int(l)
			}
			pg := bytes.Clone(b[:size])
			crc := binary.LittleEndian.Uint32(pg[22:])
			binary.LittleEndian.PutUint32(pg[22:], 0)
			if oggCRC(pg) != crc {
				t.Fatalf("page %d: bad CRC", pages)
			}
			if pages >= 2 {
				audio += size - 27 - n
			}
			b = b[size:]
		}
		if pages != 2+425 || audio != 53618 {
			t.Fatalf("%d pages, %d bytes of Opus; want 427 and 53,618", pages, audio)
		}
	}
	noPlaintext(t, p, recs, all)
}

// oggCRC is Ogg's CRC-32 (0x04c11db7, not reflected), written again here
// so the test does not trust the writer's.
func oggCRC(b []byte) uint32 {
	var c uint32
	for _, x := range b {
		c ^= uint32(x) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
	}
	return c
}

// stopOnKey stops the processor (cancels its context) when it asks for a
// recording key, in the middle of its transaction.
type stopOnKey struct {
	keys.Manager
	stop func()
}

func (s stopOnKey) GenerateDataKey(ctx context.Context, tenant string) (keys.DataKey, error) {
	s.stop()
	<-ctx.Done()
	return keys.DataKey{}, ctx.Err()
}

// TestProcessStopsCleanlyMidTransaction: stopping the processor while a
// transaction is in flight (Ctrl-C, or `verbatim dev` shutting down) is a
// clean stop, not an error; the next run records what was left.
func TestProcessStopsCleanlyMidTransaction(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := processors.Run(ctx, processors.Config{Kafka: p.kafka(), Group: p.group, Instance: p.group + "-1",
		Keys: stopOnKey{p.km, cancel}, Store: p.store, Tenants: []string{p.tenant}, SpoolDir: t.TempDir(), MaxPollRecords: 100})
	if err != nil || st.Recorded != 0 {
		t.Fatalf("stopped mid-transaction: %v (stats %+v)", err, st)
	}
	if st := p.process(nil); st.Recorded != 2 {
		t.Fatalf("the next run: %+v", st)
	}
	recs, _ := p.recordings()
	checkG711(t, recs)
}

// TestProcessCaptureIngestedTwice: the same capture ingested twice (an
// ingest restarted after a crash, or run again by mistake) gives its calls
// the same ids and new keys. Nothing becomes unreadable: every recording
// of each call opens, holds the same audio, and none fails.
func TestProcessCaptureIngestedTwice(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	st := p.process(nil)
	t.Logf("stats %+v", st)
	if st.Failed != 0 || st.Recorded == 0 {
		t.Fatalf("stats %+v", st)
	}
	// Each call has two recordings, one per ingest, each its own object
	// whose digests verify (recordings() checks them), with the same audio.
	recs, _ := p.recordings()
	if len(recs) != 2 || len(p.failures) != 0 {
		t.Fatalf("%d calls recorded, %d failures", len(recs), len(p.failures))
	}
	for call, rs := range recs {
		if len(rs) != 2 || rs[0].ev.GetRecordingId() == rs[1].ev.GetRecordingId() {
			t.Fatalf("call %s: %d recordings", call, len(rs))
		}
		if !bytes.Equal(rs[1].wav, rs[0].wav) {
			t.Fatalf("call %s: its recordings differ", call)
		}
	}
	last := map[string][]stored{}
	for call, rs := range recs {
		last[call] = rs[len(rs)-1:]
	}
	checkG711(t, last)
}

// TestProcessRefusedRecordAborts: a RecordingStored the broker refuses
// (MESSAGE_TOO_LARGE) is not lost while the transaction commits: the
// transaction aborts, the processor stops with the broker's reason, and a
// run after the fault records every call.
func TestProcessRefusedRecordAborts(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	recordingsID := p.topicID(schemas.TopicRecordings) // produce v13 names topics by id
	var refuse atomic.Bool
	refuse.Store(true)
	p.cluster.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		p.cluster.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		if !refuse.Load() {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		hit := false
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				if rt.Topic == schemas.TopicRecordings || rt.TopicID == recordingsID {
					sp.ErrorCode, hit = kerr.MessageTooLarge.Code, true
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !hit {
			return nil, nil, false
		}
		return resp, nil, true
	})
	st, err := p.processErr()
	if err == nil || !errors.Is(err, kerr.MessageTooLarge) || !strings.Contains(err.Error(), "RecordingStored") {
		t.Fatalf("a refused announcement: err %v, stats %+v", err, st)
	}
	if st.Recorded != 0 {
		t.Fatalf("stats %+v: a call counted as recorded whose announcement was refused", st)
	}
	if recs, _ := p.recordings(); len(recs) != 0 {
		t.Fatalf("%d recordings committed by an aborted transaction", len(recs))
	}
	refuse.Store(false)
	if st := p.process(nil); st.Recorded != 2 {
		t.Fatalf("after the fault: stats %+v, want both calls recorded", st)
	}
	recs, _ := p.recordings()
	checkG711(t, recs)
}

// topicID returns topic's id, as produce requests from v13 on name it.
func (p *pipeline) topicID(topic string) [16]byte {
	p.t.Helper()
	cl, err := kafkaclient.New(p.kafka())
	if err != nil {
		p.t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(context.Background(), topic)
	if err != nil || td.Error() != nil {
		p.t.Fatalf("list %s: %v %v", topic, err, td.Error())
	}
	return td[topic].ID
}

// understate rewrites every MediaEnded so that ingest appears to have
// captured n fewer packets per stream than it batched.
type understate struct {
	ingest.Producer
	n uint64
}

func (u understate) Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	if string(schemas.HeaderValue(r.Headers, schemas.HeaderType)) == "verbatim.v1.MediaEnded" {
		var me verbatimv1.MediaEnded
		if err := proto.Unmarshal(r.Value, &me); err == nil {
			for _, m := range me.GetMedia() {
				m.Packets -= min(m.GetPackets(), u.n)
			}
			r.Value, _ = proto.Marshal(&me)
		}
	}
	u.Producer.Produce(ctx, r, promise)
}

// TestProcessLedgerMustBalance: a recording whose ledger does not add up
// (here ingest's counts understated on purpose: the processor received
// more packets than ingest says it captured) is not announced: the call
// is failed with the reason, nothing is stored but its raw media, and the
// next call is recorded.
func TestProcessLedgerMustBalance(t *testing.T) {
	p := kfakePipeline(t)
	p.producer = func(pr ingest.Producer) ingest.Producer { return understate{pr, 5} }
	p.ingest("pcap/sipp_g711a.pcap")
	p.producer = nil
	p.ingest("pcap/wireshark_sip-rtp-g729a.pcap")
	st := p.process(nil)
	if st.Failed != 1 || st.Recorded != 1 {
		t.Fatalf("stats %+v: want 1 failed, 1 recorded", st)
	}
	recs, _ := p.recordings()
	if len(recs) != 1 || len(p.failures) != 1 {
		t.Fatalf("%d recordings, %d failures", len(recs), len(p.failures))
	}
	if f := p.failures[0]; !strings.Contains(f.GetReason(), "does not balance") || !strings.Contains(f.GetReason(), "236 accounted for") ||
		f.GetRawSize() == 0 {
		t.Fatalf("failure %v", f)
	}
}

// downKeys is a key manager that cannot be reached while down is set (as
// Vault down: a connection error, not a refusal).
type downKeys struct {
	keys.Manager
	down atomic.Bool
}

var errUnreachable = errors.New("dial tcp 127.0.0.1:18200: connect: connection refused")

func (d *downKeys) GenerateDataKey(ctx context.Context, tenant string) (keys.DataKey, error) {
	if d.down.Load() {
		return keys.DataKey{}, errUnreachable
	}
	return d.Manager.GenerateDataKey(ctx, tenant)
}

func (d *downKeys) UnwrapDataKey(ctx context.Context, tenant string, w keys.Wrapped) ([]byte, error) {
	if d.down.Load() {
		return nil, errUnreachable
	}
	return d.Manager.UnwrapDataKey(ctx, tenant, w)
}

// TestProcessFailsClosedWhileTheKeyManagerIsDown: with the key manager
// unreachable the processor stops with the reason, having written no
// object and announced no recording (nothing failed either: the calls are
// not lost); once it is back, the same calls are recorded.
func TestProcessFailsClosedWhileTheKeyManagerIsDown(t *testing.T) {
	p := kfakePipeline(t)
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	dk := &downKeys{Manager: p.km}
	p.km = dk
	dk.down.Store(true)
	st, err := p.processErr()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("with the key manager down: %v (stats %+v)", err, st)
	}
	var written []string
	_ = filepath.WalkDir(p.objects, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			written = append(written, path)
		}
		return nil
	})
	if len(written) != 0 || st.Recorded != 0 || st.Failed != 0 {
		t.Fatalf("while the key manager was down: objects %v, stats %+v", written, st)
	}
	if recs, _ := p.recordings(); len(recs) != 0 || len(p.failures) != 0 {
		t.Fatalf("announced while down: %d recordings, %d failures", len(recs), len(p.failures))
	}
	dk.down.Store(false)
	if st := p.process(nil); st.Recorded != 2 || st.Failed != 0 {
		t.Fatalf("once it is back: %+v", st)
	}
	recs, _ := p.recordings()
	checkG711(t, recs)
}

// TestProcessLocksRecordings: with a retention of 30 days, each
// recording's objects (the WAV and the raw media) are locked until then,
// the RecordingStored says so, and a delete is refused.
func TestProcessLocksRecordings(t *testing.T) {
	p := kfakePipeline(t)
	p.retention = 30 * 24 * time.Hour
	p.ingest("pcap/wireshark_sip-rtp-g711.pcap")
	before := time.Now()
	if st := p.process(nil); st.Recorded != 2 {
		t.Fatalf("stats %+v", st)
	}
	recs, _ := p.recordings()
	for call, rs := range recs {
		ev := rs[0].ev
		until := ev.GetRetainUntil().AsTime()
		if until.Before(before.Add(p.retention).Add(-time.Second)) || until.After(time.Now().Add(p.retention)) {
			t.Fatalf("%s: retain until %v, want 30 days from now", call, until)
		}
		for _, key := range []string{ev.GetObjectKey(), ev.GetRawObjectKey()} {
			rc, info, err := p.store.Get(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if !info.RetainUntil.Equal(until) {
				t.Fatalf("%s: locked until %v, the event says %v", key, info.RetainUntil, until)
			}
			if err := p.store.Delete(context.Background(), key); !errors.Is(err, objstore.ErrRetained) {
				t.Fatalf("%s: delete of a locked recording: %v", key, err)
			}
		}
	}
}
