package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
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
	// Parties, if set, keeps only the calls with one of them as a
	// participant (number or SIP URI): a user's own calls.
	Parties []string
	// SkillGroups, if set, keeps only the calls whose contact-centre
	// metadata names one of them: a supervisor's calls.
	SkillGroups []string
	// PeripheralID matches the calls the contact centre knows by that id
	// (MetadataAttached.peripheral_ids).
	PeripheralID string
	// Agent and SkillGroup match the contact-centre metadata of a call
	// (agent id, skill group); Variable the value of one of its call
	// variables (Name, Value).
	Agent, SkillGroup string
	Variable          *Variable
	// Tag keeps the calls tagged with it.
	Tag string
	// Direction keeps the calls of one direction: a verbatimv1.Direction
	// name, e.g. DIRECTION_INBOUND.
	Direction string
	// Status keeps the calls whose current recording has it: one of
	// schemas.RecordingStatuses.
	Status string
	// Descending orders the calls newest first (a cursor of such a page
	// goes on in that order).
	Descending bool
	// After is the cursor of the previous page (SearchPage): the calls
	// after it, in the order of the results.
	After string
	// Limit is the page size: default 100, at most MaxLimit.
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
	// RetainUntil is when object lock lets the recording's objects be
	// deleted; zero when they are not locked.
	RetainUntil time.Time `json:"retain_until,omitzero"`
	// RetentionClass is the retention class that extended the lock to
	// RetainUntil (verbatim retention apply), e.g. "tag=mifid"; empty
	// when the tenant's default set it.
	RetentionClass string `json:"retention_class,omitempty"`
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
	// Comments on the call (their author is in Variables, comment_author).
	Comments []string `json:"comments,omitempty"`
	// Tags put on the call (their author is in Variables, tag_author).
	Tags []string `json:"tags,omitempty"`
}

// Result is one found call. In JSON, names are snake_case and durations
// are seconds.
type Result struct {
	CallID    string `json:"call_id"`
	SIPCallID string `json:"sip_call_id"`
	// DataKeyID is the key sealing the call's personal fields (not in
	// JSON: an internal reference).
	DataKeyID      string        `json:"-"`
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

// Variable is a call variable's name and value, to match.
type Variable struct{ Name, Value string }

// MaxLimit bounds the calls one search returns: a page. More are read
// page by page (SearchPage's cursor, given back as Query.After).
const MaxLimit = 1000

// dbRE is what a database name may be: it is an identifier in the SQL,
// never a bound value, so nothing else gets near the query text.
var dbRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidDatabase reports whether db may name the projection's database.
func ValidDatabase(db string) error {
	if !dbRE.MatchString(db) {
		return fmt.Errorf("search: database name %q: letters, digits and '_' (at most 64, not starting with a digit)", db)
	}
	return nil
}

// Search runs q against the projection in database db: one query for the
// page of calls, then one per table for all the calls of the page.
func Search(ctx context.Context, conn driver.Conn, db string, q Query) ([]Result, error) {
	if q.Limit > MaxLimit {
		return nil, fmt.Errorf("search: at most %d calls a page (asked for %d): read further pages with the cursor", MaxLimit, q.Limit)
	}
	rs, _, err := search(ctx, conn, db, q)
	return rs, err
}

// SearchPage is Search, and the cursor of the next page ("" when there is
// none).
func SearchPage(ctx context.Context, conn driver.Conn, db string, q Query) ([]Result, string, error) {
	if q.Limit > MaxLimit {
		return nil, "", fmt.Errorf("search: at most %d calls a page (asked for %d)", MaxLimit, q.Limit)
	}
	return search(ctx, conn, db, q)
}

// cursor is where a page ends: the last call's start and id (results are
// ordered by both).
func cursor(r Result) string {
	return strconv.FormatInt(r.StartedAt.Unix(), 10) + "." + r.CallID
}

// ValidCursor reports whether c is a cursor SearchPage could have given.
func ValidCursor(c string) bool {
	_, _, err := parseCursor(c)
	return err == nil
}

func parseCursor(c string) (time.Time, string, error) {
	sec, id, ok := strings.Cut(c, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if !ok || err != nil || id == "" || len(id) > 128 {
		return time.Time{}, "", fmt.Errorf("search: bad cursor %q", c)
	}
	return time.Unix(n, 0).UTC(), id, nil
}

func search(ctx context.Context, conn driver.Conn, db string, q Query) ([]Result, string, error) {
	if q.Tenant == "" {
		return nil, "", errors.New("search: a tenant is required")
	}
	if err := ValidDatabase(db); err != nil {
		return nil, "", err
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	// An erased call is gone from search at once, before ClickHouse has
	// deleted its rows.
	where := []string{"tenant = ?", "call_id NOT IN (SELECT call_id FROM `" + db + "`.erased_calls WHERE tenant = ?)"}
	args := []any{q.Tenant, q.Tenant}
	if !q.From.IsZero() {
		where, args = append(where, "started_at >= ?"), append(args, q.From.UTC())
	}
	if q.Direction != "" {
		where, args = append(where, "direction = ?"), append(args, q.Direction)
	}
	if !q.To.IsZero() {
		where, args = append(where, "started_at < ?"), append(args, q.To.UTC())
	}
	order, after := "started_at, call_id", "(started_at > ? OR (started_at = ? AND call_id > ?))"
	if q.Descending {
		order, after = "started_at DESC, call_id DESC", "(started_at < ? OR (started_at = ? AND call_id < ?))"
	}
	if q.After != "" {
		at, id, err := parseCursor(q.After)
		if err != nil {
			return nil, "", err
		}
		where, args = append(where, after), append(args, at, at, id)
	}
	if q.Tag != "" {
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND has(tags, ?))")
		args = append(args, q.Tenant, q.Tag)
	}
	if q.Agent != "" || q.SkillGroup != "" || q.Variable != nil {
		var conds []string
		margs := []any{q.Tenant}
		if q.Agent != "" {
			conds, margs = append(conds, "agent_id = ?"), append(margs, q.Agent)
		}
		if q.SkillGroup != "" {
			conds, margs = append(conds, "skill_group = ?"), append(margs, q.SkillGroup)
		}
		if q.Variable != nil {
			conds = append(conds, "has(variable_names, ?) AND arrayElement(variable_values, indexOf(variable_names, ?)) = ?")
			margs = append(margs, q.Variable.Name, q.Variable.Name, q.Variable.Value)
		}
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND "+strings.Join(conds, " AND ")+")")
		args = append(args, margs...)
	}
	if q.PeripheralID != "" {
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND has(peripheral_ids, ?))")
		args = append(args, q.Tenant, q.PeripheralID)
	}
	if len(q.SkillGroups) > 0 {
		if len(q.SkillGroups) > 100 {
			return nil, "", fmt.Errorf("search: at most 100 skill groups (got %d)", len(q.SkillGroups))
		}
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.metadata FINAL WHERE tenant = ? AND skill_group IN "+placeholders(len(q.SkillGroups))+")")
		args = append(args, q.Tenant)
		for _, g := range q.SkillGroups {
			args = append(args, g)
		}
	}
	if q.Status != "" {
		if !slices.Contains(schemas.RecordingStatuses, q.Status) {
			return nil, "", fmt.Errorf("search: status %q: one of %q", q.Status, schemas.RecordingStatuses)
		}
		// The status of each call's current recording: of the highest
		// generation, the latest stored.
		where = append(where, "call_id IN (SELECT call_id FROM (SELECT call_id, "+
			"argMax(if(failure != '', ?, if(status = '', ?, status)), generation * 4294967296 + toUInt64(stored_at)) AS s "+
			"FROM `"+db+"`.recordings FINAL WHERE tenant = ? GROUP BY call_id) WHERE s = ?)")
		args = append(args, schemas.StatusFailed, schemas.StatusUnverified, q.Tenant, q.Status)
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
	if len(q.Parties) > 0 {
		if len(q.Parties) > 100 {
			return nil, "", fmt.Errorf("search: at most 100 parties (got %d)", len(q.Parties))
		}
		ph := placeholders(len(q.Parties))
		where = append(where, "call_id IN (SELECT call_id FROM `"+db+"`.participants FINAL WHERE tenant = ? AND (number IN "+ph+" OR uri IN "+ph+"))")
		args = append(args, q.Tenant)
		for range 2 {
			for _, p := range q.Parties {
				args = append(args, p)
			}
		}
	}
	// One more than the page: whether there is a next one.
	sql := fmt.Sprintf("SELECT call_id, sip_call_id, started_at, ended_at, duration_ms, end_reason, conversation_id, data_key_id FROM `%s`.calls FINAL WHERE %s ORDER BY %s LIMIT %d",
		db, strings.Join(where, " AND "), order, q.Limit+1)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("search: %w", err)
	}
	var out []Result
	for rows.Next() {
		var r Result
		var ms uint64
		if err := rows.Scan(&r.CallID, &r.SIPCallID, &r.StartedAt, &r.EndedAt, &ms, &r.EndReason, &r.ConversationID, &r.DataKeyID); err != nil {
			rows.Close()
			return nil, "", fmt.Errorf("search: %w", err)
		}
		r.Duration = time.Duration(ms) * time.Millisecond
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("search: %w", err)
	}
	next := ""
	if len(out) > q.Limit {
		out = out[:q.Limit]
		next = cursor(out[len(out)-1])
	}
	if len(out) == 0 {
		return out, "", nil
	}
	ids := make([]string, len(out))
	byID := make(map[string]*Result, len(out))
	for i := range out {
		ids[i] = out[i].CallID
		byID[out[i].CallID] = &out[i]
	}
	for _, fill := range []func(context.Context, driver.Conn, string, string, []string, map[string]*Result, bool) error{
		participants, recordings, metadata, linked,
	} {
		if err := fill(ctx, conn, db, q.Tenant, ids, byID, q.History); err != nil {
			return nil, "", err
		}
	}
	for i := range out {
		out[i].setStatus()
	}
	return out, next, nil
}

// placeholders is "(?, ?, ...)" for n bound values: the values of an IN
// list are bound one by one, never written into the query.
func placeholders(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
}

// bind is the arguments tenant, then vs.
func bind(tenant string, vs []string) []any {
	args := make([]any, 0, 1+len(vs))
	args = append(args, tenant)
	for _, v := range vs {
		args = append(args, v)
	}
	return args
}

// participants fills in the parties of the calls ids.
func participants(ctx context.Context, conn driver.Conn, db, tenant string, ids []string, byID map[string]*Result, _ bool) error {
	rows, err := conn.Query(ctx, "SELECT call_id, participant_id, role, uri, number, display_name FROM `"+db+"`.participants FINAL "+
		"WHERE tenant = ? AND call_id IN "+placeholders(len(ids))+" ORDER BY call_id, participant_id", bind(tenant, ids)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var p Party
		if err := rows.Scan(&id, &p.ID, &p.Role, &p.URI, &p.Number, &p.DisplayName); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if r := byID[id]; r != nil {
			r.Parties = append(r.Parties, p)
		}
	}
	return rows.Err()
}

// linked fills in, for each call, the other calls that share a session
// key with it.
func linked(ctx context.Context, conn driver.Conn, db, tenant string, ids []string, byID map[string]*Result, _ bool) error {
	rows, err := conn.Query(ctx, "SELECT call_id, session_key FROM `"+db+"`.session_keys FINAL WHERE tenant = ? AND call_id IN "+placeholders(len(ids)), bind(tenant, ids)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	keysOf := map[string][]string{}
	var keys []string
	for rows.Next() {
		var id, k string
		if err := rows.Scan(&id, &k); err != nil {
			rows.Close()
			return fmt.Errorf("search: %w", err)
		}
		keysOf[id] = append(keysOf[id], k)
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(keys) == 0 {
		return err
	}
	rows, err = conn.Query(ctx, "SELECT DISTINCT session_key, call_id FROM `"+db+"`.session_keys FINAL WHERE tenant = ? AND session_key IN "+placeholders(len(keys))+" ORDER BY call_id",
		bind(tenant, keys)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	callsOf := map[string][]string{}
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		callsOf[k] = append(callsOf[k], id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for id, ks := range keysOf {
		r := byID[id]
		for _, k := range ks {
			for _, other := range callsOf[k] {
				if other != id && !slices.Contains(r.LinkedCalls, other) {
					r.LinkedCalls = append(r.LinkedCalls, other)
				}
			}
		}
		slices.Sort(r.LinkedCalls)
	}
	return nil
}

// recordings fills in each call's current recording and, if history is
// set, its earlier ones.
func recordings(ctx context.Context, conn driver.Conn, db, tenant string, ids []string, byID map[string]*Result, history bool) error {
	rows, err := conn.Query(ctx, "SELECT call_id, recording_id, object_key, raw_object_key, format, duration_ms, channels, plaintext_sha256, ciphertext_sha256, "+
		"key_id, ciphertext_size, stored_at, end_reason, packets_captured, packets_in_recording, packets_missing, duplicates, late, batches_lost, "+
		"streams_not_decoded, failure, stream_objects, ledgers, generation, supersedes, supersede_reason, processing, retain_until "+
		"FROM `"+db+"`.recordings FINAL WHERE tenant = ? AND call_id IN "+placeholders(len(ids))+" ORDER BY call_id, generation DESC, stored_at DESC, recording_id", bind(tenant, ids)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var rec Recording
		var ms uint64
		var ledgers string
		if err := rows.Scan(&id, &rec.RecordingID, &rec.ObjectKey, &rec.RawObjectKey, &rec.Format, &ms, &rec.Channels, &rec.PlaintextSHA256,
			&rec.CiphertextSHA256, &rec.KeyID, &rec.CiphertextSize, &rec.StoredAt, &rec.EndReason, &rec.PacketsCaptured,
			&rec.PacketsInRecording, &rec.PacketsMissing, &rec.Duplicates, &rec.Late, &rec.BatchesLost,
			&rec.StreamsNotDecoded, &rec.Failure, &rec.StreamObjects, &ledgers, &rec.Generation, &rec.Supersedes,
			&rec.SupersedeReason, &rec.Processing, &rec.RetainUntil); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if rec.RetainUntil.Unix() <= 0 {
			rec.RetainUntil = time.Time{} // not locked
		}
		r := byID[id]
		if r == nil || (r.Recording != nil && !history) {
			continue
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
		r.Recording = &rec
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return extensions(ctx, conn, db, tenant, ids, byID)
}

// extensions raises each call's recordings' RetainUntil to the lock its
// retention class extended them to.
func extensions(ctx context.Context, conn driver.Conn, db, tenant string, ids []string, byID map[string]*Result) error {
	rows, err := conn.Query(ctx, "SELECT call_id, retain_until, class FROM `"+db+"`.retention_extensions FINAL WHERE tenant = ? AND call_id IN "+
		placeholders(len(ids)), bind(tenant, ids)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, class string
		var until time.Time
		if err := rows.Scan(&id, &until, &class); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		r := byID[id]
		if r == nil {
			continue
		}
		for _, rec := range append([]*Recording{r.Recording}, ptrs(r.History)...) {
			if rec != nil && until.After(rec.RetainUntil) {
				rec.RetainUntil, rec.RetentionClass = until, class
			}
		}
	}
	return rows.Err()
}

func ptrs(recs []Recording) []*Recording {
	out := make([]*Recording, len(recs))
	for i := range recs {
		out[i] = &recs[i]
	}
	return out
}

// setStatus derives the call's recording status from its recording, or
// from how it ended when it has none.
func (r *Result) setStatus() {
	switch {
	case r.Recording != nil && r.Recording.Failure != "":
		r.Status = StatusFailed
	case r.Recording != nil:
		r.Status = StatusRecorded
	case r.EndReason == "" || r.EndedAt.Unix() <= 0:
		r.Status = StatusInProgress
	case r.EndReason == "END_REASON_REJECTED" || r.EndReason == "END_REASON_CANCEL":
		r.Status = StatusNotAnswered
	default:
		r.Status = StatusMissing
	}
}

// metadata fills in each call's contact-centre metadata, oldest first.
func metadata(ctx context.Context, conn driver.Conn, db, tenant string, ids []string, byID map[string]*Result, _ bool) error {
	rows, err := conn.Query(ctx, "SELECT call_id, occurred_at, source, agent_id, agent_name, skill_group, requested_service, wrap_up_code, ani, dnis, "+
		"variable_names, variable_values, digits, digits_masked, score_names, score_values, comments, tags FROM `"+db+"`.metadata FINAL "+
		"WHERE tenant = ? AND call_id IN "+placeholders(len(ids))+" ORDER BY call_id, occurred_at, event_id", bind(tenant, ids)...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var m Metadata
		var names, values []string
		var masked uint8
		var scoreNames []string
		var scoreValues []float64
		if err := rows.Scan(&id, &m.OccurredAt, &m.Source, &m.AgentID, &m.AgentName, &m.SkillGroup, &m.RequestedService, &m.WrapUpCode,
			&m.ANI, &m.DNIS, &names, &values, &m.Digits, &masked, &scoreNames, &scoreValues, &m.Comments, &m.Tags); err != nil {
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
		if r := byID[id]; r != nil {
			r.Metadata = append(r.Metadata, m)
		}
	}
	return rows.Err()
}
