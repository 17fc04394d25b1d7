package search_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func openDB(t *testing.T) (driver.Conn, string) {
	t.Helper()
	ctx := context.Background()
	conn, db, err := search.Open(ctx, search.Config{
		Addr:     stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR"),
		User:     os.Getenv("VERBATIM_CLICKHOUSE_USER"),
		Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD"),
		Database: fmt.Sprintf("verbatim_test_%d", time.Now().UnixNano()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
		conn.Close()
	})
	if _, err := search.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, db
}

// callRecords builds the keys and calls records ingest would produce for
// one call.
func callRecords(t *testing.T, km keys.Manager, tenant, callID, sipCallID, caller, callee string, start time.Time, dur time.Duration) []*kgo.Record {
	t.Helper()
	ctx := context.Background()
	dk, err := km.GenerateDataKey(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	keyID := "dk-" + callID
	s, err := seal.New(tenant, keyID, dk.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	sealMsg := func(m proto.Message) *verbatimv1.Sealed {
		b, _ := proto.Marshal(m)
		sl, err := s.Seal(nil, string(m.ProtoReflect().Descriptor().FullName()), b)
		if err != nil {
			t.Fatal(err)
		}
		return sl
	}
	rec := func(topic, key string, at time.Time, m proto.Message) *kgo.Record {
		r, err := schemas.NewRecord(topic, []byte(key), schemas.Envelope{ID: callID + topic + at.String(), Tenant: tenant, CallID: callID, OccurredAt: at}, m)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	party := func(id, uri, number string, role verbatimv1.ParticipantRole) *verbatimv1.Participant {
		return &verbatimv1.Participant{ParticipantId: id, Role: role, Identity: sealMsg(&verbatimv1.ParticipantIdentity{Uri: uri, Number: number})}
	}
	return []*kgo.Record{
		rec(schemas.TopicCalls, callID, start, &verbatimv1.CallStarted{CallId: callID, StartedAt: timestamppb.New(start), DataKeyId: keyID,
			Signalling: sealMsg(&verbatimv1.SignallingIdentity{SipCallId: sipCallID}),
			Participants: []*verbatimv1.Participant{
				party("caller", "sip:"+caller+"@example.com", caller, verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLER),
				party("callee", "sip:"+callee+"@example.com", callee, verbatimv1.ParticipantRole_PARTICIPANT_ROLE_CALLEE),
			}}),
		// The key arrives after the call event in this batch, as it may
		// from another partition.
		rec(schemas.TopicKeys, keyID, start, &verbatimv1.DataKey{KeyId: keyID, Tenant: tenant, WrappedDek: dk.Wrapped.Ciphertext,
			KekName: dk.Wrapped.KEKName, KekVersion: dk.Wrapped.KEKVersion}),
		rec(schemas.TopicCalls, callID, start.Add(dur), &verbatimv1.CallEnded{CallId: callID, EndedAt: timestamppb.New(start.Add(dur)),
			Reason: verbatimv1.EndReason_END_REASON_BYE, Duration: durationpb.New(dur)}),
	}
}

// keyTable stands in for the key registry (keyreg, tested against Kafka
// in its own package): the data keys it was given, and a definitive
// keyreg.ErrNotFound for any other.
type keyTable map[string]*verbatimv1.DataKey

// keysOf is the registry of the DataKey records among recs; a later record
// of the same id replaces an earlier one, as in the compacted topic.
func keysOf(t *testing.T, recs []*kgo.Record) keyTable {
	t.Helper()
	k := keyTable{}
	for _, r := range recs {
		if r.Topic != schemas.TopicKeys {
			continue
		}
		dk := &verbatimv1.DataKey{}
		if err := proto.Unmarshal(r.Value, dk); err != nil {
			t.Fatal(err)
		}
		k[dk.GetKeyId()] = dk
	}
	return k
}

func (k keyTable) Get(_ context.Context, tenant, id string) (*verbatimv1.DataKey, error) {
	dk, ok := k[id]
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %s", keyreg.ErrNotFound, id)
	case dk.GetTenant() != tenant:
		return nil, fmt.Errorf("%w: %s", keyreg.ErrOtherTenant, id)
	}
	return dk, nil
}

func TestProjectAndSearch(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	recs = append(recs, callRecords(t, km, "demo", "c1", "1-1966@10.0.2.20", "1001", "2002", t0, 8480*time.Millisecond)...)
	recs = append(recs, callRecords(t, km, "demo", "c2", "1-1968@10.0.2.20", "1001", "3003", t0.Add(time.Hour), 5*time.Second)...)
	recs = append(recs, callRecords(t, km, "acme", "c3", "other@acme", "1001", "4004", t0, time.Second)...)
	// c1 is recorded with one gap of 3 packets; c2 never is.
	stored, err := schemas.NewRecord(schemas.TopicRecordings, []byte("c1"),
		schemas.Envelope{ID: "rec-c1", Tenant: "demo", CallID: "c1", OccurredAt: t0.Add(time.Minute)},
		&verbatimv1.RecordingStored{CallId: "c1", RecordingId: "r1", ObjectKey: "demo/2016/11/26/c1/r1.wav.sealed", Format: "audio/wav",
			Duration: durationpb.New(8480 * time.Millisecond), Channels: 2, PlaintextSha256: []byte{1}, CiphertextSha256: []byte{2},
			Key: &verbatimv1.KeyReference{KeyId: "dk-r1"}, StoredAt: timestamppb.New(t0.Add(time.Minute)),
			EndReason: verbatimv1.EndReason_END_REASON_BYE,
			Completeness: []*verbatimv1.StreamCompleteness{
				{StreamId: "caller-audio", PacketsCaptured: 421, PacketsInRecording: 421, Gaps: []*verbatimv1.SequenceGap{{First: 10, Last: 12}}, BatchesSent: 9, BatchesReceived: 9},
				{StreamId: "callee-audio", PacketsCaptured: 424, PacketsInRecording: 424, BatchesSent: 9, BatchesReceived: 9},
			},
			Ledgers: []*verbatimv1.StreamLedger{
				{StreamId: "caller-audio", Captured: 421, Recorded: 421, NeverCaptured: 3},
				{StreamId: "callee-audio", Captured: 424, Recorded: 424},
			}})
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, stored)

	// Apply, then replay everything through a fresh projector (a restart
	// from the beginning): no query result may change.
	for range 2 {
		if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	run := func(q search.Query) []search.Result {
		t.Helper()
		rs, err := search.Search(ctx, conn, db, q)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	all := run(search.Query{Tenant: "demo"})
	if len(all) != 2 {
		t.Fatalf("tenant demo: %d calls after a replay, want 2", len(all))
	}
	c1 := all[0]
	if c1.CallID != "c1" || c1.SIPCallID != "1-1966@10.0.2.20" || !c1.StartedAt.Equal(t0) || c1.Duration != 8480*time.Millisecond ||
		c1.EndReason != "END_REASON_BYE" || len(c1.Parties) != 2 || c1.Parties[0].URI != "sip:2002@example.com" {
		t.Fatalf("c1 = %+v", c1)
	}
	if r := c1.Recording; c1.Status != search.StatusRecorded || r == nil || r.RecordingID != "r1" || r.PacketsMissing != 3 ||
		r.PacketsInRecording != 845 || r.Duration != 8480*time.Millisecond || r.PlaintextSHA256 != "01" {
		t.Fatalf("c1 recording: %s %+v", c1.Status, r)
	}
	// Its completeness comes from the ledgers: 3 packets never captured
	// make it partial, and the JSON nests it with snake_case names.
	if c := c1.Recording.Completeness; c == nil || c.Status != "partial" || c.AudioExpected != 848 || c.AudioRecorded != 845 ||
		c.Missing["never_captured"] != 3 || len(c1.Recording.Ledgers) != 2 || c1.Recording.Ledgers[0].NeverCaptured != 3 {
		t.Fatalf("c1 completeness: %+v, ledgers %+v", c, c1.Recording.Ledgers)
	}
	if b, err := json.Marshal(c1); err != nil || !bytes.Contains(b, []byte(`"duration_seconds":8.48`)) ||
		!bytes.Contains(b, []byte(`"completeness":{"status":"partial","audio_expected":848,"audio_recorded":845,"missing":{"never_captured":3}}`)) ||
		!bytes.Contains(b, []byte(`"never_captured":3`)) {
		t.Fatalf("JSON %s (%v)", b, err)
	}
	if c2 := all[1]; c2.Status != search.StatusMissing || c2.Recording != nil {
		t.Fatalf("c2 ended without a recording: %s %+v", c2.Status, c2.Recording)
	}
	// A failure is shown as such, with its reason.
	failed, err := schemas.NewRecord(schemas.TopicRecordings, []byte("c2"),
		schemas.Envelope{ID: "fail-c2", Tenant: "demo", CallID: "c2", OccurredAt: t0.Add(2 * time.Hour)},
		&verbatimv1.RecordingFailed{CallId: "c2", RecordingId: "r2", Reason: "data key dk-c2 is not in the key registry",
			FailedAt: timestamppb.New(t0.Add(2 * time.Hour)), RawObjectKey: "demo/2016/11/26/c2/r2.rtp.sealed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := search.NewProjector(conn, db, km, keyTable{}).Apply(ctx, []*kgo.Record{failed}); err != nil {
		t.Fatal(err)
	}
	if rs := run(search.Query{Tenant: "demo", CallID: "c2"}); len(rs) != 1 || rs[0].Status != search.StatusFailed ||
		rs[0].Recording.Failure != "data key dk-c2 is not in the key registry" || rs[0].Recording.RawObjectKey == "" {
		t.Fatalf("failed recording: %+v", rs)
	}
	// A call not transferred is a conversation of its own.
	if rs := run(search.Query{Tenant: "demo", Conversation: "c1"}); len(rs) != 1 || rs[0].CallID != "c1" || rs[0].ConversationID != "c1" {
		t.Fatalf("by conversation: %+v", rs)
	}
	if rs := run(search.Query{Tenant: "demo", Party: "3003"}); len(rs) != 1 || rs[0].CallID != "c2" {
		t.Fatalf("by number: %+v", rs)
	}
	if rs := run(search.Query{Tenant: "demo", Party: "sip:1001@example.com"}); len(rs) != 2 {
		t.Fatalf("by URI: %d results", len(rs))
	}
	if rs := run(search.Query{Tenant: "demo", CallID: "1-1968@10.0.2.20"}); len(rs) != 1 || rs[0].CallID != "c2" {
		t.Fatalf("by SIP Call-ID: %+v", rs)
	}
	if rs := run(search.Query{Tenant: "demo", From: t0.Add(time.Minute), To: t0.Add(2 * time.Hour)}); len(rs) != 1 || rs[0].CallID != "c2" {
		t.Fatalf("by time: %+v", rs)
	}
	// Tenant isolation: acme's call is invisible to demo and the reverse.
	if rs := run(search.Query{Tenant: "demo", Party: "4004"}); len(rs) != 0 {
		t.Fatalf("demo sees acme's call: %+v", rs)
	}
	if rs := run(search.Query{Tenant: "acme"}); len(rs) != 1 || rs[0].CallID != "c3" {
		t.Fatalf("acme: %+v", rs)
	}
	if _, err := search.Search(ctx, conn, db, search.Query{}); err == nil {
		t.Fatal("search without a tenant accepted")
	}
}

// TestProjectorMissingKey: a call whose data key is not in the registry
// (the registry says so after reading to its end) is projected, findable
// by time, with its identities unreadable; it does not stop the projection.
func TestProjectorMissingKey(t *testing.T) {
	conn, db := openDB(t)
	km, _ := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	recs := callRecords(t, km, "demo", "c1", "x", "1", "2", t0, time.Second)
	other := callRecords(t, km, "demo", "c2", "y", "1", "3", t0.Add(time.Minute), time.Second)
	p := search.NewProjector(conn, db, km, keysOf(t, other)) // c1's key is not there
	rs := applyAndSearch(t, p, conn, db, append([]*kgo.Record{recs[0], recs[2]}, other...))
	if p.Unreadable != 1 || len(rs) != 2 || rs[0].SIPCallID != search.UnreadableIdentity || rs[0].EndReason != "END_REASON_BYE" || rs[1].SIPCallID != "y" {
		t.Fatalf("unreadable %d, results %+v", p.Unreadable, rs)
	}
}

// flakyKeys fails to look up key id (the registry could not be read to its
// end) until ok is set.
type flakyKeys struct {
	keyTable
	id string
	ok *bool
}

func (f flakyKeys) Get(ctx context.Context, tenant, id string) (*verbatimv1.DataKey, error) {
	if id == f.id && !*f.ok {
		return nil, fmt.Errorf("registry not read to its end: %w", context.DeadlineExceeded)
	}
	return f.keyTable.Get(ctx, tenant, id)
}

// TestProjectorAllOrNothing: rows go to ClickHouse once per poll, so a
// poll that fails on a record inserts none of its rows, even those of the
// records before it; the poll applied again (the registry readable again)
// inserts them all, once.
func TestProjectorAllOrNothing(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, _ := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	good := callRecords(t, km, "demo", "c1", "x", "1", "2", t0, time.Second)
	late := callRecords(t, km, "demo", "c2", "y", "1", "3", t0.Add(time.Minute), time.Second)
	poll := append(good, late...)
	ok := false
	p := search.NewProjector(conn, db, km, flakyKeys{keysOf(t, poll), "dk-c2", &ok})
	if err := p.Apply(ctx, poll); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the registry's error", err)
	}
	if rs, err := search.Search(ctx, conn, db, search.Query{Tenant: "demo"}); err != nil || len(rs) != 0 {
		t.Fatalf("after the failed poll: %d calls (%v)", len(rs), err)
	}
	ok = true
	if err := p.Apply(ctx, poll); err != nil {
		t.Fatal(err)
	}
	if rs, err := search.Search(ctx, conn, db, search.Query{Tenant: "demo"}); err != nil || len(rs) != 2 || len(rs[0].Parties) != 2 || p.Unreadable != 0 {
		t.Fatalf("after the poll again: %+v (%v), %d unreadable", rs, err, p.Unreadable)
	}
}

// applyAndSearch projects recs and returns every call of tenant demo.
func applyAndSearch(t *testing.T, p *search.Projector, conn driver.Conn, db string, recs []*kgo.Record) []search.Result {
	t.Helper()
	if err := p.Apply(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	rs, err := search.Search(context.Background(), conn, db, search.Query{Tenant: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestProjectorKeyRefused: a call whose data key the key manager refuses
// (its KEK is gone) is still projected, findable by time, with its
// identities marked unreadable; the projection goes on.
func TestProjectorKeyRefused(t *testing.T) {
	conn, db := openDB(t)
	dir := t.TempDir()
	lost, _ := keys.OpenKeyring(filepath.Join(dir, "lost.json"))
	current, _ := keys.OpenKeyring(filepath.Join(dir, "current.json"))
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	recs := callRecords(t, lost, "demo", "c1", "x", "1", "2", t0, time.Second)
	recs = append(recs, callRecords(t, current, "demo", "c2", "y", "1", "3", t0.Add(time.Minute), time.Second)...)
	p := search.NewProjector(conn, db, current, keysOf(t, recs))
	rs := applyAndSearch(t, p, conn, db, recs)
	if p.Unreadable != 1 || len(rs) != 2 || rs[0].SIPCallID != search.UnreadableIdentity || rs[0].EndReason != "END_REASON_BYE" ||
		len(rs[0].Parties) != 0 || rs[1].SIPCallID != "y" {
		t.Fatalf("unreadable %d, results %+v", p.Unreadable, rs)
	}
}

// TestProjectorKeyReplaced: the registry holds another key under the
// call's key id (ingest named keys by call alone before, so a capture
// ingested twice replaced them; or the value was tampered with): the
// call's identities do not open. The call is projected without them, as
// for a refused key, and the projection goes on.
func TestProjectorKeyReplaced(t *testing.T) {
	conn, db := openDB(t)
	km, _ := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	first := callRecords(t, km, "demo", "c1", "x", "1", "2", t0, time.Second)
	again := callRecords(t, km, "demo", "c1", "x", "1", "2", t0, time.Second)
	var recs []*kgo.Record
	for _, r := range first {
		if r.Topic != schemas.TopicKeys {
			recs = append(recs, r)
		}
	}
	for _, r := range again {
		if r.Topic == schemas.TopicKeys {
			recs = append(recs, r) // the second ingest's key, same id
		}
	}
	recs = append(recs, callRecords(t, km, "demo", "c2", "y", "1", "3", t0.Add(time.Minute), time.Second)...)
	p := search.NewProjector(conn, db, km, keysOf(t, recs))
	rs := applyAndSearch(t, p, conn, db, recs)
	if p.Unreadable != 1 || len(rs) != 2 || rs[0].SIPCallID != search.UnreadableIdentity || rs[1].SIPCallID != "y" {
		t.Fatalf("unreadable %d, results %+v", p.Unreadable, rs)
	}
}

// TestProjectMetadata: contact-centre metadata is projected with its sealed
// personal part opened, a call is found by the ANI it gives, and a replay
// adds nothing.
func TestProjectMetadata(t *testing.T) {
	conn, db := openDB(t)
	ctx := context.Background()
	km, _ := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	t0 := time.Date(2016, 11, 26, 10, 0, 0, 0, time.UTC)
	recs := callRecords(t, km, "demo", "c1", "x", "1001", "2002", t0, time.Minute)
	var keyRec verbatimv1.DataKey
	if err := proto.Unmarshal(recs[1].Value, &keyRec); err != nil {
		t.Fatal(err)
	}
	dek, err := km.UnwrapDataKey(ctx, "demo", keys.Wrapped{KEKName: keyRec.GetKekName(), KEKVersion: keyRec.GetKekVersion(), Ciphertext: keyRec.GetWrappedDek()})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := seal.New("demo", keyRec.GetKeyId(), dek)
	personal, _ := proto.Marshal(&verbatimv1.MetadataPersonal{AgentName: "Ada Agent", Ani: "+493012345", Dnis: "800",
		CallVariables: map[string]string{"account": "DE-1", "reason": "card"},
		Digits:        []*verbatimv1.EnteredDigits{{Digits: "*", Masked: true}, {Digits: "*", Masked: true}}})
	sealed, err := s.Seal(nil, "verbatim.v1.MetadataPersonal", personal)
	if err != nil {
		t.Fatal(err)
	}
	md, err := schemas.NewRecord(schemas.TopicMetadata, []byte("c1"), schemas.Envelope{ID: "md-1", Tenant: "demo", CallID: "c1", OccurredAt: t0.Add(time.Second)},
		&verbatimv1.MetadataAttached{CallId: "c1", OccurredAt: timestamppb.New(t0.Add(time.Second)), Source: "cti:finesse", AgentId: "agent-1042",
			SkillGroup: "cards", WrapUpCode: "resolved", Personal: sealed,
			Scores: []*verbatimv1.Score{{Name: "rtcp.ssrc.0x00000007.jitter_max_ms", Value: 12.5}}})
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, md)
	for range 2 {
		if err := search.NewProjector(conn, db, km, keysOf(t, recs)).Apply(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := search.Search(ctx, conn, db, search.Query{Tenant: "demo", Party: "+493012345"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || len(rs[0].Metadata) != 1 {
		t.Fatalf("by ANI: %+v", rs)
	}
	m := rs[0].Metadata[0]
	if m.AgentID != "agent-1042" || m.AgentName != "Ada Agent" || m.DNIS != "800" || m.Variables["account"] != "DE-1" || m.WrapUpCode != "resolved" ||
		m.Digits != "**" || !m.DigitsMasked || m.Scores["rtcp.ssrc.0x00000007.jitter_max_ms"] != 12.5 {
		t.Fatalf("metadata %+v", m)
	}
	if rs, _ := search.Search(ctx, conn, db, search.Query{Tenant: "acme", Party: "+493012345"}); len(rs) != 0 {
		t.Fatalf("another tenant finds the call by its ANI")
	}
	// By agent, skill group and call variable (decrypted by the
	// projection); each filter also refuses what does not match.
	for _, c := range []struct {
		q    search.Query
		want int
	}{
		{search.Query{Agent: "agent-1042"}, 1}, {search.Query{Agent: "agent-1"}, 0},
		{search.Query{SkillGroup: "cards"}, 1}, {search.Query{SkillGroup: "loans"}, 0},
		{search.Query{Variable: &search.Variable{Name: "account", Value: "DE-1"}}, 1},
		{search.Query{Variable: &search.Variable{Name: "account", Value: "DE-2"}}, 0},
		{search.Query{Variable: &search.Variable{Name: "reason", Value: "DE-1"}}, 0},
		{search.Query{Agent: "agent-1042", SkillGroup: "cards", Variable: &search.Variable{Name: "reason", Value: "card"}}, 1},
	} {
		c.q.Tenant = "demo"
		if rs, err := search.Search(ctx, conn, db, c.q); err != nil || len(rs) != c.want {
			t.Errorf("%+v: %d calls (%v), want %d", c.q, len(rs), err, c.want)
		}
	}
}
