package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/transparency-dev/formats/log"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/audit"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// env is a Kafka (kfake) with the topics, a ClickHouse database with the
// audit tables, a keyring signer and a store.
type env struct {
	t       testing.TB
	ctx     context.Context
	kcfg    kafkaclient.Config
	conn    driver.Conn
	db      string
	signer  *keys.Keyring
	store   objstore.Store
	verify  note.Verifier
	cluster *kfake.Cluster
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	e := &env{t: t, ctx: ctx, cluster: cluster, kcfg: kafkaclient.Config{Brokers: cluster.ListenAddrs()}}
	cl, err := kafkaclient.New(e.kcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	e.conn, e.db = e.database()
	if e.signer, err = keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json")); err != nil {
		t.Fatal(err)
	}
	if e.store, err = objstore.NewFS(filepath.Join(t.TempDir(), "objects")); err != nil {
		t.Fatal(err)
	}
	vkey, err := audit.VerifierKey(ctx, e.signer)
	if err != nil {
		t.Fatal(err)
	}
	if e.verify, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	return e
}

// database is a new ClickHouse database with the schema.
func (e *env) database() (driver.Conn, string) {
	t := e.t
	conn, db, err := search.Open(e.ctx, search.Config{Addr: stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR"), User: os.Getenv("VERBATIM_CLICKHOUSE_USER"),
		Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD"), Database: fmt.Sprintf("verbatim_audit_%d", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
		conn.Close()
	})
	if _, err := search.Migrate(e.ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, db
}

func (e *env) config(db string) audit.Config {
	return audit.Config{Kafka: e.kcfg, Conn: e.conn, Database: db, Signer: e.signer, Store: e.store, ExitWhenIdle: true}
}

// run appends the topic into db's log.
func (e *env) run(db string) audit.Stats {
	e.t.Helper()
	st, err := audit.Run(e.ctx, e.config(db))
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// event is an audit record of tenant.
func event(t testing.TB, tenant string, i int, action string) *kgo.Record {
	t.Helper()
	id := fmt.Sprintf("ev-%s-%d", tenant, i)
	ev := &verbatimv1.AuditEvent{EventId: id, OccurredAt: timestamppb.New(time.Date(2026, 12, 2, 9, 0, i, 0, time.UTC)), Tenant: tenant, Action: action,
		Actor: &verbatimv1.Actor{Subject: "user-" + tenant, Role: "supervisor", Tenant: tenant}, CallId: fmt.Sprintf("call-%d", i%3),
		Target: &verbatimv1.Target{Type: "recording", Id: fmt.Sprintf("rec-%d", i)}, Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS, SourceAddress: "192.0.2.7"}
	if action == "recording.stored" {
		ev.Recording = &verbatimv1.RecordingStored{CallId: fmt.Sprintf("call-%d", i%3), RecordingId: fmt.Sprintf("rec-%d", i), ObjectKey: "demo/x.wav.sealed",
			PlaintextSha256: bytes.Repeat([]byte{byte(i)}, 32), CiphertextSha256: bytes.Repeat([]byte{byte(i + 1)}, 32)}
	}
	r, err := schemas.NewRecord(schemas.TopicAudit, []byte(tenant), schemas.Envelope{ID: id, Tenant: tenant, OccurredAt: time.Now(), Producer: "test"}, ev)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// produce writes recs in one transaction, committed or aborted.
func (e *env) produce(commit bool, recs ...*kgo.Record) {
	e.t.Helper()
	cl, err := kafkaclient.New(e.kcfg, kgo.TransactionalID(fmt.Sprintf("audit-test-%d", time.Now().UnixNano())))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	if err := cl.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	end := kgo.TryAbort
	if commit {
		end = kgo.TryCommit
	}
	if err := cl.EndTransaction(e.ctx, end); err != nil {
		e.t.Fatal(err)
	}
}

// latest is tenant's latest checkpoint in db.
func (e *env) latest(db, tenant string) log.Checkpoint {
	e.t.Helper()
	var signed string
	if err := e.conn.QueryRow(e.ctx, "SELECT note FROM `"+db+"`.audit_checkpoints WHERE tenant = ? ORDER BY size DESC LIMIT 1", tenant).Scan(&signed); err != nil {
		e.t.Fatal(err)
	}
	cp, _, _, err := log.ParseCheckpoint([]byte(signed), audit.Origin(tenant), e.verify)
	if err != nil {
		e.t.Fatal(err)
	}
	return *cp
}

func (e *env) verifyDB(db, tenant string, kafka *kafkaclient.Config) audit.Report {
	e.t.Helper()
	r, err := audit.Verify(e.ctx, audit.VerifyConfig{Conn: e.conn, Database: db, Tenant: tenant, Store: e.store, Verifier: e.verify, Kafka: kafka})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// TestAuditLog: events of two tenants, a malformed record and an aborted
// transaction are appended (the aborted one not), one tree per tenant,
// checkpoints signed and stored; verify passes from the table and from
// the topic; a replay appends nothing; a rebuild from the topic reaches
// the same roots; inclusion proofs (of an event, of a recording) and a
// consistency proof check with transparency-dev/merkle; malformed
// proofs are refused.
func TestAuditLog(t *testing.T) {
	e := newEnv(t)
	var recs []*kgo.Record
	for i := range 20 {
		action := "recording.play"
		if i%4 == 0 {
			action = "recording.stored"
		}
		recs = append(recs, event(t, "demo", i, action))
		if i%3 == 0 {
			recs = append(recs, event(t, "acme", i, "call.search"))
		}
	}
	malformed := &kgo.Record{Topic: schemas.TopicAudit, Key: []byte("demo"), Value: []byte("not protobuf \xff\xff")}
	recs = append(recs, malformed)
	e.produce(true, recs...)
	e.produce(false, event(t, "demo", 99, "recording.delete")) // aborted: never happened
	st := e.run(e.db)
	if st.Appended != 28 || st.Tenants != 2 || st.Checkpoints != 2 {
		t.Fatalf("first run: %+v, want 28 appended (20 demo and the malformed one, 7 acme) of 2 tenants, 2 checkpoints", st)
	}
	demo := e.latest(e.db, "demo")
	if demo.Size != 21 {
		t.Fatalf("demo's checkpoint: size %d, want 21", demo.Size)
	}
	for _, tenant := range []string{"demo", "acme"} {
		for _, src := range []*kafkaclient.Config{nil, &e.kcfg} {
			if r := e.verifyDB(e.db, tenant, src); !r.OK() || r.Checkpoints != 1 {
				t.Fatalf("verify %s (%s): %+v", tenant, r.Source, r)
			}
		}
	}
	var malformedRows uint64
	if err := e.conn.QueryRow(e.ctx, "SELECT count() FROM `"+e.db+"`.audit_log WHERE action = 'malformed'").Scan(&malformedRows); err != nil || malformedRows != 1 {
		t.Fatalf("malformed rows: %d %v", malformedRows, err)
	}

	// A replay appends nothing; a rebuild reaches the same roots.
	if st := e.run(e.db); st.Appended != 0 || st.Checkpoints != 0 {
		t.Fatalf("replay: %+v, want nothing appended", st)
	}
	_, rebuilt := e.database()
	e.run(rebuilt)
	if got := e.latest(rebuilt, "demo"); got.Size != demo.Size || !bytes.Equal(got.Hash, demo.Hash) {
		t.Fatalf("rebuilt: size %d root %x, want %d %x", got.Size, got.Hash, demo.Size, demo.Hash)
	}

	// The log, read against another Kafka (a fresh one): refused, not
	// silently skipped.
	fresh := newReplay(t, nil)
	cfg := e.config(e.db)
	cfg.Kafka = fresh
	if _, err := audit.Run(e.ctx, cfg); err == nil || !strings.Contains(err.Error(), "another Kafka cluster") {
		t.Fatalf("a log run against another cluster: %v", err)
	}

	// Inclusion: an event, a stored recording.
	proofs, err := audit.Prove(e.ctx, e.conn, e.db, "demo", "ev-demo-7")
	if err != nil || len(proofs) != 1 || proofs[0].TreeSize != 21 {
		t.Fatalf("prove: %+v %v", proofs, err)
	}
	if err := audit.CheckInclusion(proofs[0], e.verify); err != nil {
		t.Fatalf("inclusion: %v", err)
	}
	custody, err := audit.ProveRecording(e.ctx, e.conn, e.db, "demo", "call-1")
	if err != nil || len(custody) != 2 { // events 4 and 16: call-1 (i % 3 == 1), stored (i % 4 == 0)
		t.Fatalf("prove-recording: %d proofs, %v", len(custody), err)
	}
	for _, p := range custody {
		if err := audit.CheckInclusion(p, e.verify); err != nil || p.Recording == nil {
			t.Fatalf("custody proof of entry %d: %v (recording %v)", p.Index, err, p.Recording)
		}
	}

	// More events; the old checkpoint is a prefix of the new.
	e.produce(true, event(t, "demo", 20, "recording.play"), event(t, "demo", 21, "export.create"))
	if st := e.run(e.db); st.Appended != 2 {
		t.Fatalf("third run: %+v", st)
	}
	cons, err := audit.Consistency(e.ctx, e.conn, e.db, "demo", 21, 23)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.CheckConsistency(cons, e.verify); err != nil {
		t.Fatalf("consistency: %v", err)
	}

	// Malformed proofs are refused.
	other, _, _ := note.GenerateKey(nil, audit.KeyName)
	otherSigner, _ := note.NewSigner(other)
	forgedCP, _ := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: audit.Origin("demo"), Size: 21, Hash: demo.Hash}.Marshal())}, otherSigner)
	good := proofs[0]
	mutate := func(f func(p *audit.InclusionProof)) audit.InclusionProof {
		p := good
		p.Proof = slices.Clone(good.Proof)
		for i := range p.Proof {
			p.Proof[i] = bytes.Clone(good.Proof[i])
		}
		p.Leaf = bytes.Clone(good.Leaf)
		f(&p)
		return p
	}
	for name, p := range map[string]audit.InclusionProof{
		"a hash flipped":           mutate(func(p *audit.InclusionProof) { p.Proof[0][0] ^= 1 }),
		"a hash missing":           mutate(func(p *audit.InclusionProof) { p.Proof = p.Proof[1:] }),
		"a hash too many":          mutate(func(p *audit.InclusionProof) { p.Proof = append(p.Proof, p.Proof[0]) }),
		"a short hash":             mutate(func(p *audit.InclusionProof) { p.Proof[0] = p.Proof[0][:31] }),
		"another index":            mutate(func(p *audit.InclusionProof) { p.Index++ }),
		"an index past the end":    mutate(func(p *audit.InclusionProof) { p.Index = 21 }),
		"a negative index":         mutate(func(p *audit.InclusionProof) { p.Index = -1 }),
		"another leaf":             mutate(func(p *audit.InclusionProof) { p.Leaf[len(p.Leaf)-1] ^= 1 }),
		"a size the note does not": mutate(func(p *audit.InclusionProof) { p.TreeSize = 22 }),
		"another tenant's origin":  mutate(func(p *audit.InclusionProof) { p.Tenant = "acme" }),
		"signed by another key":    mutate(func(p *audit.InclusionProof) { p.Checkpoint = string(forgedCP) }),
		"an unsigned checkpoint": mutate(func(p *audit.InclusionProof) {
			p.Checkpoint = string(log.Checkpoint{Origin: audit.Origin("demo"), Size: 21, Hash: demo.Hash}.Marshal())
		}),
		"garbage": mutate(func(p *audit.InclusionProof) { p.Checkpoint = "not a note" }),
	} {
		if err := audit.CheckInclusion(p, e.verify); !errors.Is(err, audit.ErrProof) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	badCons := cons
	badCons.Proof = slices.Clone(cons.Proof)
	badCons.Proof[0] = bytes.Clone(cons.Proof[0])
	badCons.Proof[0][5] ^= 1
	swapped := cons
	swapped.OldCheckpoint, swapped.NewCheckpoint = cons.NewCheckpoint, cons.OldCheckpoint
	for name, p := range map[string]audit.ConsistencyProof{"a hash flipped": badCons, "checkpoints swapped": swapped,
		"no proof": {Tenant: "demo", Old: 21, New: 23, OldCheckpoint: cons.OldCheckpoint, NewCheckpoint: cons.NewCheckpoint}} {
		if err := audit.CheckConsistency(p, e.verify); !errors.Is(err, audit.ErrProof) {
			t.Errorf("consistency, %s: %v, want refused", name, err)
		}
	}
}

// copyLog copies db's audit tables into a new database, each column of
// audit_log as cols says (an expression over the original's, by name),
// keeping the rows where is true.
func (e *env) copyLog(db string, cols map[string]string, where string) string {
	e.t.Helper()
	_, dst := e.database()
	names := []string{"tenant", "idx", "leaf", "hashes", "event_id", "occurred_at", "action", "actor_subject", "actor_role", "target_type", "target_id",
		"call_id", "result", "reason", "source_address", "kafka_partition", "kafka_offset", "appended_at"}
	var exprs []string
	for _, n := range names {
		if x, ok := cols[n]; ok {
			exprs = append(exprs, x+" AS "+n)
		} else {
			exprs = append(exprs, n)
		}
	}
	if where == "" {
		where = "1"
	}
	for _, q := range []string{
		"INSERT INTO `" + dst + "`.audit_log SELECT " + strings.Join(exprs, ", ") + " FROM `" + db + "`.audit_log WHERE " + where,
		"INSERT INTO `" + dst + "`.audit_checkpoints SELECT * FROM `" + db + "`.audit_checkpoints",
	} {
		if err := e.conn.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
	return dst
}

// TestAuditVerifyFindsTampering: one row of the table altered (a column,
// or the leaf), deleted, reordered or inserted, one record of a replayed
// topic altered, deleted, reordered or inserted, and a forked
// checkpoint: verify names the first bad entry of each.
func TestAuditVerifyFindsTampering(t *testing.T) {
	e := newEnv(t)
	var recs []*kgo.Record
	for i := range 12 {
		recs = append(recs, event(t, "demo", i, "recording.play"))
	}
	e.produce(true, recs...)
	e.run(e.db)
	if r := e.verifyDB(e.db, "demo", nil); !r.OK() {
		t.Fatalf("untouched: %+v", r)
	}
	for name, c := range map[string]struct {
		cols  map[string]string
		where string
		first int64
	}{
		"a column altered":     {map[string]string{"actor_subject": "if(idx = 5, 'someone-else', actor_subject)"}, "", 5},
		"a call id altered":    {map[string]string{"call_id": "if(idx = 7, 'call-x', call_id)"}, "", 7},
		"a leaf altered":       {map[string]string{"leaf": "if(idx = 5, concat(leaf, 'x'), leaf)"}, "", 5},
		"a row deleted":        {nil, "idx != 5", 5},
		"two rows reordered":   {map[string]string{"idx": "multiIf(idx = 5, toUInt64(6), idx = 6, toUInt64(5), idx)"}, "", 5},
		"the last row deleted": {nil, "idx != 11", 11},
	} {
		r := e.verifyDB(e.copyLog(e.db, c.cols, c.where), "demo", nil)
		if r.OK() || r.FirstBad != c.first {
			t.Errorf("%s: first bad entry %d, want %d: %v", name, r.FirstBad, c.first, r.Problems)
		} else {
			t.Logf("%s: %s", name, r.Problems[0])
		}
	}
	// A row inserted: a copy of entry 3 again, and a row past the end.
	dup := e.copyLog(e.db, nil, "")
	if err := e.conn.Exec(e.ctx, "INSERT INTO `"+dup+"`.audit_log SELECT * FROM `"+e.db+"`.audit_log WHERE idx = 3"); err != nil {
		t.Fatal(err)
	}
	if r := e.verifyDB(dup, "demo", nil); r.OK() || r.FirstBad != 3 {
		t.Errorf("a row inserted: first bad %d: %v", r.FirstBad, r.Problems)
	}
	past := e.copyLog(e.db, nil, "")
	if err := e.conn.Exec(e.ctx, "INSERT INTO `"+past+"`.audit_log SELECT tenant, toUInt64(12), leaf, hashes, event_id, occurred_at, action, actor_subject, actor_role, "+
		"target_type, target_id, call_id, result, reason, source_address, kafka_partition, kafka_offset, appended_at FROM `"+e.db+"`.audit_log WHERE idx = 0"); err != nil {
		t.Fatal(err)
	}
	// Past the last checkpoint the table alone cannot tell (entries wait
	// up to a minute for theirs); against the topic it can.
	if r := e.verifyDB(past, "demo", &e.kcfg); r.OK() || r.FirstBad != 12 {
		t.Errorf("a row past the end: first bad %d: %v", r.FirstBad, r.Problems)
	}

	// A forked checkpoint: the same size, another root, signed with the
	// log's own key.
	forked := e.copyLog(e.db, nil, "")
	cp := e.latest(e.db, "demo")
	other := log.Checkpoint{Origin: audit.Origin("demo"), Size: cp.Size, Hash: bytes.Repeat([]byte{7}, 32)}.Marshal()
	signer := e.noteSigner()
	signed, err := note.Sign(&note.Note{Text: string(other)}, signer)
	if err != nil {
		t.Fatal(err)
	}
	key := audit.CheckpointKey("demo", int64(cp.Size)) + ".fork"
	if _, err := e.store.Put(e.ctx, key, bytes.NewReader(signed), int64(len(signed)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := e.conn.PrepareBatch(e.ctx, "INSERT INTO `"+forked+"`.audit_checkpoints (tenant, size, root, note, object_key, written_at)")
	if err == nil {
		err = b.Append("demo", cp.Size, string(other), string(signed), key, time.Now())
	}
	if err == nil {
		err = b.Send()
	}
	if err != nil {
		t.Fatal(err)
	}
	if r := e.verifyDB(forked, "demo", nil); r.OK() || !strings.Contains(strings.Join(r.Problems, "\n"), "forked log") {
		t.Errorf("a forked checkpoint: %v", r.Problems)
	}

	// A replayed topic, one record changed: verify from it against the
	// table names the entry.
	for name, c := range map[string]struct {
		edit  func([]*kgo.Record) []*kgo.Record
		first int64
	}{
		"a record altered": {func(rs []*kgo.Record) []*kgo.Record {
			rs[4] = event(t, "demo", 40, "recording.play")
			return rs
		}, 4},
		"a record deleted":  {func(rs []*kgo.Record) []*kgo.Record { return slices.Delete(rs, 6, 7) }, 6},
		"records reordered": {func(rs []*kgo.Record) []*kgo.Record { rs[2], rs[3] = rs[3], rs[2]; return rs }, 2},
		"a record inserted": {func(rs []*kgo.Record) []*kgo.Record {
			return slices.Insert(rs, 8, event(t, "demo", 80, "recording.play"))
		}, 8},
		"a record appended":   {func(rs []*kgo.Record) []*kgo.Record { return append(rs, event(t, "demo", 90, "recording.play")) }, 12},
		"the topic unchanged": {func(rs []*kgo.Record) []*kgo.Record { return rs }, -1},
	} {
		replay := newReplay(t, c.edit(slices.Clone(recs)))
		r := e.verifyDB(e.db, "demo", &replay)
		if r.FirstBad != c.first {
			t.Errorf("replayed topic, %s: first bad entry %d, want %d: %v", name, r.FirstBad, c.first, r.Problems)
		} else if !r.OK() {
			t.Logf("replayed topic, %s: %s", name, r.Problems[0])
		}
	}
}

// newReplay is a Kafka of its own whose audit topic holds recs.
func newReplay(t *testing.T, recs []*kgo.Record) kafkaclient.Config {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := kafkaclient.Config{Brokers: cluster.ListenAddrs()}
	cl, err := kafkaclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), 1); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		c := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
		if err := cl.ProduceSync(ctx, c).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// noteSigner signs with the log's own key (a test's forgery of a fork,
// as someone holding the key could).
func (e *env) noteSigner() note.Signer {
	e.t.Helper()
	s, err := audit.NoteSigner(e.ctx, e.signer)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}
