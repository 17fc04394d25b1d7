package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Query selects calls of one tenant. Empty fields do not filter.
type Query struct {
	// Tenant is required: every search is scoped to one tenant.
	Tenant string
	// From and To bound the call's start time, [From, To).
	From, To time.Time
	// Party matches any participant's phone number or SIP URI exactly, or
	// the ANI or DNIS that contact-centre metadata gives for the call.
	Party string
	// CallID matches Verbatim's call id or the SIP Call-ID.
	CallID string
	// Conversation matches the calls of one conversation (a call and
	// the transfers that continued it).
	Conversation string
	// History fills in each call's earlier recordings (Result.History):
	// the ones reprocessing superseded.
	History bool
	// Limit, default 100.
	Limit int
}

// Party is one participant of a found call.
type Party struct {
	ID          string `json:"id"`
	Role        string `json:"role"`
	URI         string `json:"uri,omitempty"`
	Number      string `json:"number,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
}

// Recording statuses of a found call.
const (
	StatusRecorded   = "recorded"    // stored; see Recording.Completeness
	StatusInProgress = "in progress" // the call has not ended
	// StatusFailed: the media could not be made into a recording;
	// Recording.Failure says why, and the raw media object is kept.
	StatusFailed      = "FAILED"
	StatusNotAnswered = "not answered" // rejected or cancelled: nothing to record
	// StatusMissing: the call ended but no recording exists (no media was
	// captured for it, or it has not been processed yet). Never silent.
	StatusMissing = "MISSING"
)

// Recording is the stored recording of a found call and how complete it
// is. In JSON, names are snake_case and durations are seconds.
type Recording struct {
	RecordingID      string        `json:"recording_id"`
	ObjectKey        string        `json:"object_key,omitempty"`
	RawObjectKey     string        `json:"raw_object_key,omitempty"`
	Format           string        `json:"format,omitempty"`
	Duration         time.Duration `json:"-"` // duration_seconds
	Channels         uint8         `json:"channels,omitempty"`
	PlaintextSHA256  string        `json:"plaintext_sha256,omitempty"`
	CiphertextSHA256 string        `json:"ciphertext_sha256,omitempty"`
	KeyID            string        `json:"key_id,omitempty"`
	CiphertextSize   uint64        `json:"ciphertext_size,omitempty"`
	StoredAt         time.Time     `json:"stored_at"`
	EndReason        string        `json:"end_reason,omitempty"`
	// Completeness is derived from Ledgers (schemas.Summarize). It is nil
	// for a recording stored before ledgers existed, whose completeness
	// is therefore not proven, and for a failed one.
	Completeness *schemas.Completeness `json:"completeness"`
	// Ledgers account for every packet captured, per stream.
	Ledgers []Ledger `json:"ledgers,omitempty"`
	// Totals over the streams' per-source reports, for recordings stored
	// before ledgers (not in JSON).
	PacketsCaptured, PacketsInRecording, PacketsMissing, Duplicates, Late, BatchesLost uint64 `json:"-"`
	// StreamsNotDecoded have no audio in the recording; their packets are
	// in the raw media object.
	StreamsNotDecoded uint8 `json:"streams_not_decoded,omitempty"`
	// Failure is set when the call could not be recorded.
	Failure string `json:"failure,omitempty"`
	// StreamObjects lists, as protobuf JSON ({"streamObjects": [...]}),
	// the streams kept in their own codec beside the WAV (Opus as Ogg).
	StreamObjects string `json:"-"`
	// Generation is 0 for a call's first recording, n for the n-th made
	// again from its raw media (verbatim reprocess); Supersedes and
	// SupersedeReason then name the recording it replaced, and why.
	Generation      uint32 `json:"generation,omitempty"`
	Supersedes      string `json:"supersedes,omitempty"`
	SupersedeReason string `json:"supersede_reason,omitempty"`
	// Processing made the recording (RecordingStored.processing).
	Processing string `json:"processing,omitempty"`
}

// Ledger is a StreamLedger (schemas/proto/verbatim/v1/recordings.proto):
// where every packet captured for one stream went.
type Ledger struct {
	StreamID        string `json:"stream_id"`
	Captured        uint64 `json:"captured"`
	Recorded        uint64 `json:"recorded"`
	Events          uint64 `json:"events"`
	ComfortNoise    uint64 `json:"comfort_noise"`
	Duplicate       uint64 `json:"duplicate"`
	Stray           uint64 `json:"stray"`
	Late            uint64 `json:"late"`
	NotDecodable    uint64 `json:"not_decodable"`
	EncryptedNoKeys uint64 `json:"encrypted_no_keys"`
	SRTPAuthFailed  uint64 `json:"srtp_auth_failed"`
	SRTPReplayed    uint64 `json:"srtp_replayed"`
	LostInTransit   uint64 `json:"lost_in_transit"`
	NeverCaptured   uint64 `json:"never_captured"`
	CaptureDamaged  string `json:"capture_damaged,omitempty"`
	Detail          string `json:"detail,omitempty"`
	// SSRCs are the RTP sources the stream's packets came from.
	SSRCs []uint32 `json:"ssrcs,omitempty"`
}

func ledgerOf(l *verbatimv1.StreamLedger) Ledger {
	return Ledger{StreamID: l.GetStreamId(), Captured: l.GetCaptured(), Recorded: l.GetRecorded(), Events: l.GetEvents(),
		ComfortNoise: l.GetComfortNoise(), Duplicate: l.GetDuplicate(), Stray: l.GetStray(), Late: l.GetLate(), NotDecodable: l.GetNotDecodable(),
		EncryptedNoKeys: l.GetEncryptedNoKeys(), SRTPAuthFailed: l.GetSrtpAuthFailed(), SRTPReplayed: l.GetSrtpReplayed(),
		LostInTransit: l.GetLostInTransit(), NeverCaptured: l.GetNeverCaptured(), CaptureDamaged: l.GetCaptureDamaged(), Detail: l.GetDetail(),
		SSRCs: l.GetSsrcs()}
}

// MarshalJSON writes the duration in seconds.
func (r Recording) MarshalJSON() ([]byte, error) {
	type plain Recording
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain(r), r.Duration.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Recording) UnmarshalJSON(b []byte) error {
	type plain Recording
	v := struct {
		*plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.Duration = time.Duration(v.DurationSeconds * float64(time.Second))
	return nil
}

// Metadata is one contact-centre metadata event of a found call.
type Metadata struct {
	OccurredAt       time.Time         `json:"occurred_at"`
	Source           string            `json:"source,omitempty"`
	AgentID          string            `json:"agent_id,omitempty"`
	AgentName        string            `json:"agent_name,omitempty"`
	SkillGroup       string            `json:"skill_group,omitempty"`
	RequestedService string            `json:"requested_service,omitempty"`
	WrapUpCode       string            `json:"wrap_up_code,omitempty"`
	ANI              string            `json:"ani,omitempty"`
	DNIS             string            `json:"dnis,omitempty"`
	Variables        map[string]string `json:"variables,omitempty"`
	// Digits keyed during the call; "*" each when masked (PCI mode).
	Digits       string `json:"digits,omitempty"`
	DigitsMasked bool   `json:"digits_masked,omitempty"`
	// Scores: QA evaluations, and RTCP call quality
	// ("rtcp.ssrc.0x….jitter_max_ms", "….loss_fraction_max", ...).
	Scores map[string]float64 `json:"scores,omitempty"`
}

// Result is one found call. In JSON, names are snake_case and durations
// are seconds.
type Result struct {
	CallID         string        `json:"call_id"`
	SIPCallID      string        `json:"sip_call_id"`
	ConversationID string        `json:"conversation_id,omitempty"`
	StartedAt      time.Time     `json:"started_at"`
	EndedAt        time.Time     `json:"ended_at"`
	Duration       time.Duration `json:"-"` // duration_seconds
	EndReason      string        `json:"end_reason,omitempty"`
	Parties        []Party       `json:"parties"`
	Status         string        `json:"status"`
	// Recording is the call's current recording: of the highest
	// generation, the latest stored.
	Recording *Recording `json:"recording,omitempty"`
	// History holds, when asked for (Query.History), the call's other
	// recordings, newest first: those reprocessing superseded.
	History []Recording `json:"history,omitempty"`
	// LinkedCalls are other recordings of the same conversation: calls
	// that share a communication-session key (a SIPREC recording and a
	// passive capture of one call, or two SRCs' forks).
	LinkedCalls []string   `json:"linked_calls,omitempty"`
	Metadata    []Metadata `json:"metadata,omitempty"`
}

// MarshalJSON writes the duration in seconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain(r), r.Duration.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Result) UnmarshalJSON(b []byte) error {
	type plain Result
	v := struct {
		*plain
		DurationSeconds float64 `json:"duration_seconds"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.Duration = time.Duration(v.DurationSeconds * float64(time.Second))
	return nil
}

// Search runs q against the projection in database db.
func Search(ctx context.Context, conn driver.Conn, db string, q Query) ([]Result, error) {
	if q.Tenant == "" {
		return nil, errors.New("search: a tenant is required")
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	where := []string{"tenant = ?"}
	args := []any{q.Tenant}
	if !q.From.IsZero() {
		where, args = append(where, "started_at >= ?"), append(args, q.From.UTC())
	}
	if !q.To.IsZero() {
		where, args = append(where, "started_at < ?"), append(args, q.To.UTC())
	}
	if q.CallID != "" {
		where, args = append(where, "(call_id = ? OR sip_call_id = ?)"), append(args, q.CallID, q.CallID)
	}
	if q.Conversation != "" {
		where, args = append(where, "conversation_id = ?"), append(args, q.Conversation)
	}
	if q.Party != "" {
		where = append(where, "(call_id IN (SELECT call_id FROM `"+db+"`.participants FINAL WHERE tenant = ? AND (number = ? OR uri = ?))"+
			" OR call_id IN (SELECT call_id FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND (ani = ? OR dnis = ?)))")
		args = append(args, q.Tenant, q.Party, q.Party, q.Tenant, q.Party, q.Party)
	}
	sql := fmt.Sprintf("SELECT call_id, sip_call_id, started_at, ended_at, duration_ms, end_reason, conversation_id FROM `%s`.calls FINAL WHERE %s ORDER BY started_at, call_id LIMIT %d",
		db, strings.Join(where, " AND "), q.Limit)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var out []Result
	for rows.Next() {
		var r Result
		var ms uint64
		if err := rows.Scan(&r.CallID, &r.SIPCallID, &r.StartedAt, &r.EndedAt, &ms, &r.EndReason, &r.ConversationID); err != nil {
			rows.Close()
			return nil, fmt.Errorf("search: %w", err)
		}
		r.Duration = time.Duration(ms) * time.Millisecond
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	for i := range out {
		prow, err := conn.Query(ctx, "SELECT participant_id, role, uri, number, display_name FROM `"+db+"`.participants FINAL WHERE tenant = ? AND call_id = ? ORDER BY participant_id",
			q.Tenant, out[i].CallID)
		if err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		for prow.Next() {
			var p Party
			if err := prow.Scan(&p.ID, &p.Role, &p.URI, &p.Number, &p.DisplayName); err != nil {
				prow.Close()
				return nil, fmt.Errorf("search: %w", err)
			}
			out[i].Parties = append(out[i].Parties, p)
		}
		prow.Close()
		if err := recording(ctx, conn, db, q.Tenant, &out[i], q.History); err != nil {
			return nil, err
		}
		if err := metadata(ctx, conn, db, q.Tenant, &out[i]); err != nil {
			return nil, err
		}
		if err := linked(ctx, conn, db, q.Tenant, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// linked fills in the other calls that share a session key with r.
func linked(ctx context.Context, conn driver.Conn, db, tenant string, r *Result) error {
	rows, err := conn.Query(ctx, "SELECT DISTINCT call_id FROM `"+db+"`.session_keys FINAL WHERE tenant = ? AND call_id != ? AND session_key IN "+
		"(SELECT session_key FROM `"+db+"`.session_keys FINAL WHERE tenant = ? AND call_id = ?) ORDER BY call_id", tenant, r.CallID, tenant, r.CallID)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		r.LinkedCalls = append(r.LinkedCalls, id)
	}
	return rows.Err()
}

// recording fills in r's current recording, if any, and its status; and,
// if history is set, its earlier ones.
func recording(ctx context.Context, conn driver.Conn, db, tenant string, r *Result, history bool) error {
	limit := " LIMIT 1"
	if history {
		limit = ""
	}
	rows, err := conn.Query(ctx, "SELECT recording_id, object_key, raw_object_key, format, duration_ms, channels, plaintext_sha256, ciphertext_sha256, "+
		"key_id, ciphertext_size, stored_at, end_reason, packets_captured, packets_in_recording, packets_missing, duplicates, late, batches_lost, "+
		"streams_not_decoded, failure, stream_objects, ledgers, generation, supersedes, supersede_reason, processing "+
		"FROM `"+db+"`.recordings FINAL WHERE tenant = ? AND call_id = ? ORDER BY generation DESC, stored_at DESC, recording_id"+limit, tenant, r.CallID)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rec Recording
		var ms uint64
		var ledgers string
		if err := rows.Scan(&rec.RecordingID, &rec.ObjectKey, &rec.RawObjectKey, &rec.Format, &ms, &rec.Channels, &rec.PlaintextSHA256,
			&rec.CiphertextSHA256, &rec.KeyID, &rec.CiphertextSize, &rec.StoredAt, &rec.EndReason, &rec.PacketsCaptured,
			&rec.PacketsInRecording, &rec.PacketsMissing, &rec.Duplicates, &rec.Late, &rec.BatchesLost,
			&rec.StreamsNotDecoded, &rec.Failure, &rec.StreamObjects, &ledgers, &rec.Generation, &rec.Supersedes,
			&rec.SupersedeReason, &rec.Processing); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		rec.Duration = time.Duration(ms) * time.Millisecond
		if ledgers != "" && rec.Failure == "" {
			var ev verbatimv1.RecordingStored
			if err := protojson.Unmarshal([]byte(ledgers), &ev); err != nil {
				return fmt.Errorf("search: recording %s: ledgers: %w", rec.RecordingID, err)
			}
			if len(ev.GetLedgers()) > 0 {
				c := schemas.Summarize(ev.GetLedgers())
				rec.Completeness = &c
				for _, l := range ev.GetLedgers() {
					rec.Ledgers = append(rec.Ledgers, ledgerOf(l))
				}
			}
		}
		if r.Recording != nil {
			r.History = append(r.History, rec)
			continue
		}
		r.Recording, r.Status = &rec, StatusRecorded
		if rec.Failure != "" {
			r.Status = StatusFailed
		}
	}
	if r.Recording != nil {
		return rows.Err()
	}
	switch {
	case r.EndReason == "" || r.EndedAt.Unix() <= 0:
		r.Status = StatusInProgress
	case r.EndReason == "END_REASON_REJECTED" || r.EndReason == "END_REASON_CANCEL":
		r.Status = StatusNotAnswered
	default:
		r.Status = StatusMissing
	}
	return rows.Err()
}

// metadata fills in r's contact-centre metadata, oldest first.
func metadata(ctx context.Context, conn driver.Conn, db, tenant string, r *Result) error {
	rows, err := conn.Query(ctx, "SELECT occurred_at, source, agent_id, agent_name, skill_group, requested_service, wrap_up_code, ani, dnis, "+
		"variable_names, variable_values, digits, digits_masked, score_names, score_values FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND call_id = ? ORDER BY occurred_at, event_id", tenant, r.CallID)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m Metadata
		var names, values []string
		var masked uint8
		var scoreNames []string
		var scoreValues []float64
		if err := rows.Scan(&m.OccurredAt, &m.Source, &m.AgentID, &m.AgentName, &m.SkillGroup, &m.RequestedService, &m.WrapUpCode,
			&m.ANI, &m.DNIS, &names, &values, &m.Digits, &masked, &scoreNames, &scoreValues); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		m.DigitsMasked = masked == 1
		for i := range min(len(scoreNames), len(scoreValues)) {
			if m.Scores == nil {
				m.Scores = map[string]float64{}
			}
			m.Scores[scoreNames[i]] = scoreValues[i]
		}
		for i := range min(len(names), len(values)) {
			if m.Variables == nil {
				m.Variables = map[string]string{}
			}
			m.Variables[names[i]] = values[i]
		}
		r.Metadata = append(r.Metadata, m)
	}
	return rows.Err()
}
