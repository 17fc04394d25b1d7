package search

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// KeyLookup finds the wrapped data key an event names; *keyreg.Registry
// is one. Get returns an error wrapping keyreg.ErrNotFound only once it
// knows the key is not in the registry, and keyreg.ErrShredded for an
// erased key; any other error (the registry could not be read) stops the
// poll, which is applied again.
type KeyLookup interface {
	Get(ctx context.Context, tenant, id string) (*verbatimv1.DataKey, error)
}

var _ KeyLookup = (*keyreg.Registry)(nil)

// errNoKey marks a key the registry says is not there, erased, or
// another tenant's: the events it seals cannot be read, ever.
var errNoKey = errors.New("no usable data key")

// maxSealers bounds the unwrapped keys kept between polls: a call's
// events mostly come while the call lasts.
const maxSealers = 10000

// Projector turns call events into rows. Rows carry the event's time as
// their version, so applying the same events again changes no query
// result. Not safe for concurrent use.
type Projector struct {
	conn    driver.Conn
	db      string
	keys    keys.Manager
	reg     KeyLookup
	sealers map[string]*seal.Sealer
	started map[string]callRow // open calls, to complete on CallEnded
	// erased holds "tenant\x00call_id" of erased calls, loaded from
	// erased_calls at the first Apply: their events are dropped.
	erased map[string]bool
	// pending holds this Apply's rows, one batch per INSERT statement:
	// ClickHouse takes one insert per table per poll, not one per event.
	pending map[string]driver.Batch
	// Unreadable counts sealed values that could not be read: their data
	// key is not in the registry or erased, the key manager refused it, or
	// the key does not open them. Their calls are projected without those
	// identities.
	Unreadable int
}

type callRow struct {
	tenant, callID, sipCallID, source string
	conversationID, dataKeyID         string
	direction                         string
	startedAt, endedAt                time.Time
	durationMS                        uint64
	endReason                         string
}

// UnreadableIdentity stands for the SIP Call-ID of a call whose identities
// cannot be read: its data key is not in the registry, is erased, or the
// key manager refuses to unwrap it.
const UnreadableIdentity = "(unreadable: data key missing, erased or refused by the key manager)"

// NewProjector returns a Projector writing to database db, finding data
// keys with reg and unwrapping them with km.
func NewProjector(conn driver.Conn, db string, km keys.Manager, reg KeyLookup) *Projector {
	return &Projector{conn: conn, db: db, keys: km, reg: reg,
		sealers: map[string]*seal.Sealer{}, started: map[string]callRow{}}
}

// Apply projects a batch of records from the keys, calls and recordings
// topics. Data keys in the batch are learnt before the events that use
// them. The rows go to ClickHouse in one insert per table at the end. On
// error none of them is inserted, and applying the whole batch again is
// safe.
func (p *Projector) Apply(ctx context.Context, recs []*kgo.Record) (err error) {
	defer func() {
		for stmt, b := range p.pending {
			if err == nil {
				if err = b.Send(); err != nil {
					err = fmt.Errorf("search: insert: %w", err)
				}
			} else {
				_ = b.Abort()
			}
			delete(p.pending, stmt)
		}
	}()
	if p.erased == nil {
		if err := p.loadErased(ctx); err != nil {
			return err
		}
	}
	for _, r := range recs {
		if r.Attrs.IsControl() || r.Topic == schemas.TopicKeys {
			continue // a transaction marker; keys are the registry's
		}
		env, err := schemas.ParseHeaders(r.Headers)
		if err != nil {
			return fmt.Errorf("search: %s offset %d: %w", r.Topic, r.Offset, err)
		}
		if err := p.apply(ctx, env, r.Value); err != nil {
			return fmt.Errorf("search: %s %s offset %d: %w", r.Topic, env.Type, r.Offset, err)
		}
	}
	return nil
}

func (p *Projector) sealer(ctx context.Context, tenant, keyID string) (*seal.Sealer, error) {
	if s, ok := p.sealers[keyID]; ok {
		return s, nil
	}
	dk, err := p.reg.Get(ctx, tenant, keyID)
	if errors.Is(err, keyreg.ErrNotFound) || errors.Is(err, keyreg.ErrShredded) || errors.Is(err, keyreg.ErrOtherTenant) {
		return nil, fmt.Errorf("%w: %w", errNoKey, err)
	}
	if err != nil {
		return nil, err
	}
	plain, err := p.keys.UnwrapDataKey(ctx, tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
	if err != nil {
		return nil, err
	}
	s, err := seal.New(tenant, keyID, plain)
	if err != nil {
		return nil, err
	}
	if len(p.sealers) >= maxSealers {
		clear(p.sealers)
	}
	p.sealers[keyID] = s
	return s, nil
}

// unreadable reports whether err means the sealed value can never be read
// (as opposed to a failure worth retrying).
func unreadable(err error) bool {
	return errors.Is(err, errNoKey) || errors.Is(err, keys.ErrUnwrap) || errors.Is(err, seal.ErrOpen)
}

func open[M proto.Message](s *seal.Sealer, sealed *verbatimv1.Sealed, m M) error {
	if sealed == nil {
		return nil
	}
	b, err := s.Open(nil, string(m.ProtoReflect().Descriptor().FullName()), sealed)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// loadErased reads the erased calls.
func (p *Projector) loadErased(ctx context.Context) error {
	rows, err := p.conn.Query(ctx, "SELECT tenant, call_id FROM `"+p.db+"`.erased_calls")
	if err != nil {
		return fmt.Errorf("search: erased calls: %w", err)
	}
	defer rows.Close()
	p.erased = map[string]bool{}
	for rows.Next() {
		var tenant, id string
		if err := rows.Scan(&tenant, &id); err != nil {
			return err
		}
		p.erased[tenant+"\x00"+id] = true
	}
	return rows.Err()
}

// callOf is the call an event is about, from its key's field.
type callOf interface{ GetCallId() string }

// EraseRows deletes an erased call's rows from every table (a mutation
// ClickHouse applies in the background; WaitMutations waits for it) and
// lists it in erased_calls, which search queries exclude at once.
func EraseRows(ctx context.Context, conn driver.Conn, db, tenant, callID, requestID, reason string, at time.Time) error {
	if err := eraseRows(ctx, conn, db, tenant, []string{callID}, requestID, reason, at, "tenant = ? AND call_id = ?", tenant, callID); err != nil {
		return fmt.Errorf("search: erase %s: %w", callID, err)
	}
	return nil
}

// EraseTenant deletes every row of a tenant's calls from every table (as
// mutations: WaitMutations waits for them) after listing each call in
// erased_calls, so that a rebuilt projection brings none back. It
// returns the calls listed. The tenant's audit log stays.
func EraseTenant(ctx context.Context, conn driver.Conn, db, tenant, requestID, reason string, at time.Time) (int, error) {
	ids, err := TenantCalls(ctx, conn, db, tenant)
	if err != nil {
		return 0, err
	}
	if err := eraseRows(ctx, conn, db, tenant, ids, requestID, reason, at, "tenant = ?", tenant); err != nil {
		return 0, fmt.Errorf("search: erase tenant %s: %w", tenant, err)
	}
	return len(ids), nil
}

// eraseRows lists calls in erased_calls, then deletes the rows where
// holds from every table erasure deletes from.
func eraseRows(ctx context.Context, conn driver.Conn, db, tenant string, calls []string, requestID, reason string, at time.Time, where string, args ...any) error {
	if len(calls) > 0 {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO `"+db+"`.erased_calls (tenant, call_id, request_id, reason, erased_at)")
		if err != nil {
			return err
		}
		for _, id := range calls {
			if err := b.Append(tenant, id, requestID, reason, at.UTC()); err != nil {
				return err
			}
		}
		if err := b.Send(); err != nil {
			return err
		}
	}
	for _, t := range ErasedTables {
		if err := conn.Exec(ctx, "ALTER TABLE `"+db+"`."+t+" DELETE WHERE "+where, args...); err != nil {
			return fmt.Errorf("from %s: %w", t, err)
		}
	}
	return nil
}

// TenantCalls are the ids of a tenant's calls, sorted: those with a call
// or a recording row.
func TenantCalls(ctx context.Context, conn driver.Conn, db, tenant string) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT call_id FROM `"+db+"`.calls WHERE tenant = ? UNION ALL SELECT DISTINCT call_id FROM `"+db+
		"`.recordings WHERE tenant = ?", tenant, tenant)
	if err != nil {
		return nil, fmt.Errorf("search: the calls of tenant %s: %w", tenant, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, rows.Err()
}

// TenantRows counts a tenant's rows in each table erasure deletes from.
func TenantRows(ctx context.Context, conn driver.Conn, db, tenant string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, t := range ErasedTables {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM `"+db+"`."+t+" WHERE tenant = ?", tenant).Scan(&n); err != nil {
			return nil, fmt.Errorf("search: rows of tenant %s in %s: %w", tenant, t, err)
		}
		out[t] = n
	}
	return out, nil
}

// WaitMutations returns once ClickHouse has applied every deletion of
// database db's tables (EraseRows), or ctx ends. It asks system.mutations
// until none is pending; that table is the only signal ClickHouse 18.16
// gives of a mutation's end.
func WaitMutations(ctx context.Context, conn driver.Conn, db string) error {
	for {
		var pending uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0", db).Scan(&pending); err != nil {
			return fmt.Errorf("search: mutations: %w", err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("search: %d row deletions still pending: %w", pending, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Projector) apply(ctx context.Context, env schemas.Envelope, val []byte) error {
	version := uint64(env.OccurredAt.UnixNano())
	if env.Type == "verbatim.v1.CallErased" {
		var ev verbatimv1.CallErased
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		// This poll's rows go first, so that the deletion covers them.
		for stmt, b := range p.pending {
			if err := b.Send(); err != nil {
				return fmt.Errorf("search: insert: %w", err)
			}
			delete(p.pending, stmt)
		}
		p.erased[env.Tenant+"\x00"+ev.GetCallId()] = true
		delete(p.started, ev.GetCallId())
		return EraseRows(ctx, p.conn, p.db, env.Tenant, ev.GetCallId(), ev.GetRequestId(), ev.GetReason().String(), ev.GetErasedAt().AsTime())
	}
	if id := eventCall(env.Type, val); id != "" && p.erased[env.Tenant+"\x00"+id] {
		return nil // erased: nothing of it is projected again
	}
	switch env.Type {
	case "verbatim.v1.CallStarted":
		var ev verbatimv1.CallStarted
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		s, err := p.sealer(ctx, env.Tenant, ev.GetDataKeyId())
		var sig verbatimv1.SignallingIdentity
		if err == nil {
			err = open(s, ev.GetSignalling(), &sig)
		}
		if unreadable(err) {
			// The call's key is not in the registry or erased, the key
			// manager refuses it (its KEK is gone: the call is
			// effectively erased), or the registry's key for
			// it does not open its identities (tampered, or replaced by
			// another key of the same id). The call stays findable by
			// time, its identities shown as unreadable, and the
			// projection goes on.
			p.Unreadable++
			row := callRow{tenant: env.Tenant, callID: ev.GetCallId(), sipCallID: UnreadableIdentity,
				source: ev.GetSource().String(), startedAt: ev.GetStartedAt().AsTime(), conversationID: ev.GetConversationId(),
				dataKeyID: ev.GetDataKeyId(), direction: ev.GetDirection().String()}
			p.started[row.callID] = row
			return p.insertCall(ctx, row, version)
		}
		if err != nil {
			return err
		}
		row := callRow{tenant: env.Tenant, callID: ev.GetCallId(), sipCallID: sig.GetSipCallId(),
			source: ev.GetSource().String(), startedAt: ev.GetStartedAt().AsTime(), conversationID: ev.GetConversationId(),
			dataKeyID: ev.GetDataKeyId(), direction: ev.GetDirection().String()}
		p.started[row.callID] = row
		if err := p.insertCall(ctx, row, version); err != nil {
			return err
		}
		if len(ev.GetSessionKeys()) > 0 {
			kb, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.session_keys (tenant, session_key, call_id, started_at, version)")
			if err != nil {
				return err
			}
			for _, k := range ev.GetSessionKeys() {
				if err := kb.Append(env.Tenant, k, ev.GetCallId(), row.startedAt, version); err != nil {
					return err
				}
			}
		}
		b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.participants (tenant, call_id, participant_id, role, uri, number, display_name, started_at, version)")
		if err != nil {
			return err
		}
		for _, pt := range ev.GetParticipants() {
			var id verbatimv1.ParticipantIdentity
			if err := open(s, pt.GetIdentity(), &id); errors.Is(err, seal.ErrOpen) {
				p.Unreadable++
				continue // this identity only
			} else if err != nil {
				return err
			}
			if err := b.Append(env.Tenant, ev.GetCallId(), pt.GetParticipantId(), pt.GetRole().String(), id.GetUri(), id.GetNumber(),
				id.GetDisplayName(), row.startedAt, version); err != nil {
				return err
			}
		}
		return nil // sent with the rest of the poll, by Apply
	case "verbatim.v1.CallEnded":
		var ev verbatimv1.CallEnded
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		row, ok := p.started[ev.GetCallId()]
		if !ok {
			var err error
			if row, err = p.loadCall(ctx, env.Tenant, ev.GetCallId()); err != nil {
				return err
			}
		}
		delete(p.started, ev.GetCallId())
		row.endedAt = ev.GetEndedAt().AsTime()
		row.durationMS = uint64(ev.GetDuration().AsDuration().Milliseconds())
		row.endReason = ev.GetReason().String()
		return p.insertCall(ctx, row, version)
	case "verbatim.v1.RecordingStored":
		var ev verbatimv1.RecordingStored
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		return p.insertRecording(ctx, env.Tenant, &ev, version)
	case "verbatim.v1.RetentionExtended":
		var ev verbatimv1.RetentionExtended
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.retention_extensions (tenant, call_id, retain_until, class, extended_at)")
		if err != nil {
			return err
		}
		return b.Append(env.Tenant, ev.GetCallId(), ev.GetRetainUntil().AsTime(), ev.GetClass(), ev.GetExtendedAt().AsTime())
	case "verbatim.v1.MetadataAttached":
		var ev verbatimv1.MetadataAttached
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		var personal verbatimv1.MetadataPersonal
		if ev.GetPersonal() != nil {
			s, err := p.sealer(ctx, env.Tenant, ev.GetPersonal().GetKeyId())
			switch {
			case unreadable(err):
				p.Unreadable++ // the event's other fields are still projected
			case err != nil:
				return err
			default:
				if err := open(s, ev.GetPersonal(), &personal); errors.Is(err, seal.ErrOpen) {
					p.Unreadable++
				} else if err != nil {
					return err
				}
			}
		}
		names := slices.Sorted(maps.Keys(personal.GetCallVariables()))
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = personal.GetCallVariables()[n]
		}
		scoreNames, scoreValues := []string{}, []float64{}
		for _, sc := range ev.GetScores() {
			scoreNames, scoreValues = append(scoreNames, sc.GetName()), append(scoreValues, sc.GetValue())
		}
		var digits strings.Builder
		var masked uint8
		for _, d := range personal.GetDigits() {
			digits.WriteString(d.GetDigits())
			if d.GetMasked() {
				masked = 1
			}
		}
		b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.metadata (tenant, call_id, event_id, occurred_at, source, agent_id, "+
			"skill_group, requested_service, wrap_up_code, agent_name, ani, dnis, variable_names, variable_values, version, digits, digits_masked, "+
			"score_names, score_values, comments, tags, peripheral_ids)")
		if err != nil {
			return err
		}
		if err := b.Append(env.Tenant, ev.GetCallId(), env.ID, ev.GetOccurredAt().AsTime(), ev.GetSource(), ev.GetAgentId(),
			ev.GetSkillGroup(), ev.GetRequestedService(), ev.GetWrapUpCode(), personal.GetAgentName(), personal.GetAni(),
			personal.GetDnis(), names, values, version, digits.String(), masked, scoreNames, scoreValues, personal.GetComments(), ev.GetTags(),
			ev.GetPeripheralIds()); err != nil {
			return err
		}
		return nil // sent with the rest of the poll, by Apply
	case "verbatim.v1.RecordingFailed":
		var ev verbatimv1.RecordingFailed
		if err := proto.Unmarshal(val, &ev); err != nil {
			return err
		}
		b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.recordings (tenant, call_id, recording_id, stored_at, version, end_reason, raw_object_key, failure, "+
			"supersedes, supersede_reason, generation, processing)")
		if err != nil {
			return err
		}
		reason := ev.GetReason()
		if reason == "" {
			reason = "unknown"
		}
		if err := b.Append(env.Tenant, ev.GetCallId(), ev.GetRecordingId(), ev.GetFailedAt().AsTime(), version, ev.GetEndReason().String(),
			ev.GetRawObjectKey(), reason, ev.GetSupersedes().GetRecordingId(), ev.GetSupersedes().GetReason(), ev.GetSupersedes().GetGeneration(),
			ev.GetProcessing()); err != nil {
			return err
		}
		return nil // sent with the rest of the poll, by Apply
	}
	return nil
}

// eventCall is the call id of a call event, "" for other types.
func eventCall(typ string, val []byte) string {
	var m interface {
		proto.Message
		callOf
	}
	switch typ {
	case "verbatim.v1.CallStarted":
		m = &verbatimv1.CallStarted{}
	case "verbatim.v1.CallEnded":
		m = &verbatimv1.CallEnded{}
	case "verbatim.v1.RecordingStored":
		m = &verbatimv1.RecordingStored{}
	case "verbatim.v1.RecordingFailed":
		m = &verbatimv1.RecordingFailed{}
	case "verbatim.v1.MetadataAttached":
		m = &verbatimv1.MetadataAttached{}
	case "verbatim.v1.RetentionExtended":
		m = &verbatimv1.RetentionExtended{}
	default:
		return ""
	}
	if proto.Unmarshal(val, m) != nil {
		return "" // apply reports it
	}
	return m.GetCallId()
}

func (p *Projector) insertRecording(ctx context.Context, tenant string, ev *verbatimv1.RecordingStored, version uint64) error {
	var captured, inRec, missing, dups, late, lost uint64
	var notDecoded uint8
	for _, c := range ev.GetCompleteness() {
		if c.GetNotDecoded() != "" {
			notDecoded++
		}
		captured += c.GetPacketsCaptured()
		inRec += c.GetPacketsInRecording()
		dups += c.GetDuplicates()
		late += c.GetLate()
		for _, g := range c.GetGaps() {
			missing += g.GetLast() - g.GetFirst() + 1
		}
		if c.GetBatchesSent() > c.GetBatchesReceived() {
			lost += c.GetBatchesSent() - c.GetBatchesReceived()
		}
	}
	report, err := protojson.Marshal(&verbatimv1.RecordingStored{Completeness: ev.GetCompleteness()})
	if err != nil {
		return err
	}
	ledgers, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&verbatimv1.RecordingStored{Ledgers: ev.GetLedgers()})
	if err != nil {
		return err
	}
	status := ""
	if len(ev.GetLedgers()) > 0 {
		status = schemas.Summarize(ev.GetLedgers()).Status
	}
	var objects []byte
	if len(ev.GetStreamObjects()) > 0 {
		if objects, err = protojson.Marshal(&verbatimv1.RecordingStored{StreamObjects: ev.GetStreamObjects()}); err != nil {
			return err
		}
	}
	b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.recordings (tenant, call_id, recording_id, object_key, format, duration_ms, channels, "+
		"plaintext_sha256, ciphertext_sha256, key_id, stored_at, version, end_reason, raw_object_key, ciphertext_size, "+
		"packets_captured, packets_in_recording, packets_missing, duplicates, late, batches_lost, completeness, streams_not_decoded, stream_objects, ledgers, status, "+
		"supersedes, supersede_reason, generation, processing, retain_until)")
	if err != nil {
		return err
	}
	retain := time.Unix(0, 0) // not locked
	if ev.GetRetainUntil() != nil {
		retain = ev.GetRetainUntil().AsTime()
	}
	if err := b.Append(tenant, ev.GetCallId(), ev.GetRecordingId(), ev.GetObjectKey(), ev.GetFormat(),
		uint64(ev.GetDuration().AsDuration().Milliseconds()), uint8(ev.GetChannels()),
		hex.EncodeToString(ev.GetPlaintextSha256()), hex.EncodeToString(ev.GetCiphertextSha256()), ev.GetKey().GetKeyId(),
		ev.GetStoredAt().AsTime(), version, ev.GetEndReason().String(), ev.GetRawObjectKey(), ev.GetCiphertextSize(),
		captured, inRec, missing, dups, late, lost, string(report), notDecoded, string(objects), string(ledgers), status,
		ev.GetSupersedes().GetRecordingId(), ev.GetSupersedes().GetReason(), ev.GetSupersedes().GetGeneration(), ev.GetProcessing(), retain); err != nil {
		return err
	}
	return nil // sent with the rest of the poll, by Apply
}

// batch returns this Apply's batch for an INSERT statement.
func (p *Projector) batch(ctx context.Context, stmt string) (driver.Batch, error) {
	if b, ok := p.pending[stmt]; ok {
		return b, nil
	}
	b, err := p.conn.PrepareBatch(ctx, stmt)
	if err != nil {
		return nil, err
	}
	if p.pending == nil {
		p.pending = map[string]driver.Batch{}
	}
	p.pending[stmt] = b
	return b, nil
}

func (p *Projector) insertCall(ctx context.Context, r callRow, version uint64) error {
	b, err := p.batch(ctx, "INSERT INTO `"+p.db+"`.calls (tenant, call_id, sip_call_id, started_at, ended_at, duration_ms, end_reason, source, version, conversation_id, data_key_id, direction)")
	if err != nil {
		return err
	}
	conv := r.conversationID
	if conv == "" {
		conv = r.callID
	}
	if err := b.Append(r.tenant, r.callID, r.sipCallID, r.startedAt, r.endedAt, r.durationMS, r.endReason, r.source, version, conv, r.dataKeyID, r.direction); err != nil {
		return err
	}
	return nil // sent with the rest of the poll, by Apply
}

// loadCall reads a call's current row, for a CallEnded whose CallStarted
// was projected before a restart.
func (p *Projector) loadCall(ctx context.Context, tenant, callID string) (callRow, error) {
	r := callRow{tenant: tenant, callID: callID}
	err := p.conn.QueryRow(ctx, "SELECT sip_call_id, source, started_at, conversation_id, data_key_id, direction FROM `"+p.db+"`.calls FINAL WHERE tenant = ? AND call_id = ?",
		tenant, callID).Scan(&r.sipCallID, &r.source, &r.startedAt, &r.conversationID, &r.dataKeyID, &r.direction)
	if err != nil {
		return r, fmt.Errorf("call %s ended before it started: %w", callID, err)
	}
	return r, nil
}
