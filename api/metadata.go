package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Writer commits what a request changes together with its audit event:
// both, or neither.
type Writer interface {
	Commit(ctx context.Context, recs ...*kgo.Record) error
}

// KafkaWriter commits records in one Kafka transaction, one transaction at
// a time, checking every produce before the commit.
type KafkaWriter struct {
	Client *kgo.Client // transactional
	mu     sync.Mutex
}

// Commit produces recs in a transaction and commits it.
func (w *KafkaWriter) Commit(ctx context.Context, recs ...*kgo.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.Client.BeginTransaction(); err != nil {
		return err
	}
	var errs []error
	var mu sync.Mutex
	for _, r := range recs {
		w.Client.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	if err := w.Client.Flush(ctx); err != nil {
		errs = append(errs, err)
	}
	mu.Lock()
	err := errors.Join(errs...)
	mu.Unlock()
	commit := kgo.TryCommit
	if err != nil {
		commit = kgo.TryAbort
	}
	if eerr := w.Client.EndTransaction(ctx, commit); eerr != nil {
		return errors.Join(err, eerr)
	}
	return err
}

// metadataIn is what an agent's application or a CTI integration posts
// for a call. Names, numbers, variables and comments are sealed under the
// call's data key before they leave the API.
type metadataIn struct {
	Source           string             `json:"source"`
	OccurredAt       *time.Time         `json:"occurred_at"`
	AgentID          string             `json:"agent_id"`
	AgentName        string             `json:"agent_name"`
	SkillGroup       string             `json:"skill_group"`
	RequestedService string             `json:"requested_service"`
	WrapUpCode       string             `json:"wrap_up_code"`
	ANI              string             `json:"ani"`
	DNIS             string             `json:"dnis"`
	PeripheralIDs    []string           `json:"peripheral_ids"`
	Variables        map[string]string  `json:"variables"`
	Scores           map[string]float64 `json:"scores"`
	Comments         []string           `json:"comments"`
	// Which call, for POST /v1/metadata: exactly one of Verbatim's call
	// id, the SIP Call-ID, or an id the contact centre gave the call
	// before (a peripheral id in earlier metadata).
	CallID       string `json:"call_id"`
	SIPCallID    string `json:"sip_call_id"`
	PeripheralID string `json:"peripheral_id"`
}

// maxMetadataBody bounds a metadata request.
const maxMetadataBody = 64 << 10

var (
	idempotencyRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	sourceRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._:-]{0,63}$`)
)

func (m *metadataIn) validate() error {
	if !sourceRE.MatchString(m.Source) {
		return badRequest("source: %q: lower-case letters, digits, '.', '_', ':', '-' (at most 64), e.g. \"cti:finesse\" or \"agent-app\"", m.Source)
	}
	for name, v := range map[string]string{"agent_id": m.AgentID, "agent_name": m.AgentName, "skill_group": m.SkillGroup,
		"requested_service": m.RequestedService, "wrap_up_code": m.WrapUpCode, "ani": m.ANI, "dnis": m.DNIS} {
		if len(v) > 256 {
			return badRequest("%s: longer than 256 bytes", name)
		}
	}
	switch {
	case len(m.PeripheralIDs) > 16:
		return badRequest("peripheral_ids: more than 16")
	case len(m.Variables) > 64:
		return badRequest("variables: more than 64")
	case len(m.Scores) > 64:
		return badRequest("scores: more than 64")
	case len(m.Comments) > 16:
		return badRequest("comments: more than 16")
	}
	for k, v := range m.Variables {
		if k == "" || len(k) > 64 || len(v) > 1024 {
			return badRequest("variables: a name of 1 to 64 bytes and a value of at most 1,024 (%q)", k)
		}
	}
	for k, v := range m.Scores {
		if k == "" || len(k) > 64 || math.IsNaN(v) || math.IsInf(v, 0) {
			return badRequest("scores: a name of 1 to 64 bytes and a finite value (%q)", k)
		}
	}
	for _, c := range m.Comments {
		if len(c) > 2000 {
			return badRequest("comments: longer than 2,000 bytes")
		}
	}
	for _, p := range m.PeripheralIDs {
		if p == "" || len(p) > 128 {
			return badRequest("peripheral_ids: 1 to 128 bytes each")
		}
	}
	return nil
}

// idempotencyKey is a changing request's Idempotency-Key (required), once
// the request is known to carry no query parameter.
func idempotencyKey(req *request) (string, error) {
	if _, err := query(req.r); err != nil {
		return "", err
	}
	key := req.r.Header.Get("Idempotency-Key")
	if !idempotencyRE.MatchString(key) {
		return "", badRequest("an Idempotency-Key header of 1 to 128 letters, digits, '.', '_', ':', '-' is required")
	}
	return key, nil
}

// keyAndBody reads a changing request's Idempotency-Key and its body,
// strictly, into v.
func keyAndBody(req *request, v any) (string, error) {
	key, err := idempotencyKey(req)
	if err != nil {
		return "", err
	}
	return key, decodeStrict(req.r.Body, v)
}

// decodeStrict reads exactly one JSON object of known fields from r.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &apiError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit)}
		}
		return badRequest("body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body: one JSON object only")
	}
	return nil
}

// attachMetadata takes contact-centre metadata for a call (agent, skill
// group, variables, scores...) and produces it as MetadataAttached, its
// personal fields sealed under the call's key, in one transaction with
// the request's audit event. The Idempotency-Key header makes a retry
// produce the same event, which every consumer counts once.
func (s *Server) attachMetadata(w http.ResponseWriter, req *request) error {
	var in metadataIn
	key, err := keyAndBody(req, &in)
	if err != nil {
		return err
	}
	if in.CallID != "" || in.SIPCallID != "" || in.PeripheralID != "" {
		return badRequest("call_id, sip_call_id and peripheral_id name the call of POST /v1/metadata; here the path does")
	}
	if err := in.validate(); err != nil {
		return err
	}
	c, g, err := s.call(req.r.Context(), req.id, req.target, false)
	if err != nil {
		return err
	}
	if len(in.Scores) > 0 && !req.id.Has(auth.RoleService) && !g.may(PermScore) {
		return g.forbid(PermScore)
	}
	ev, personal := in.event(req.id)
	return s.commitMetadata(w, req, key, []search.Result{c}, ev, personal)
}

// maxMetadataCalls bounds the calls one POST /v1/metadata attaches to (a
// peripheral id of a conversation with its transfers).
const maxMetadataCalls = 16

// attachMetadataByID is attachMetadata for a call named in the body by
// Verbatim's call id, its SIP Call-ID or a peripheral id: what a CTI
// integration knows. Every call so named (at most 16) gets the data, in
// one transaction.
func (s *Server) attachMetadataByID(w http.ResponseWriter, req *request) error {
	var in metadataIn
	key, err := keyAndBody(req, &in)
	if err != nil {
		return err
	}
	q := search.Query{Tenant: req.id.Tenant, Limit: maxMetadataCalls + 1}
	named := 0
	for _, v := range []string{in.CallID, in.SIPCallID, in.PeripheralID} {
		if v != "" {
			named++
		}
		if len(v) > 128 {
			return badRequest("call_id, sip_call_id, peripheral_id: at most 128 bytes")
		}
	}
	if named != 1 {
		return badRequest("name the call by exactly one of call_id, sip_call_id or peripheral_id (%d given)", named)
	}
	if err := in.validate(); err != nil {
		return err
	}
	g, err := s.grants(req.r.Context(), req.id)
	if err != nil {
		return err
	}
	if len(in.Scores) > 0 && !req.id.Has(auth.RoleService) && !g.may(PermScore) {
		return g.forbid(PermScore)
	}
	q.CallID, q.PeripheralID = in.CallID+in.SIPCallID, in.PeripheralID
	g.scope(&q)
	rs, _, err := search.SearchPage(req.r.Context(), s.cfg.Conn, s.cfg.Database, q)
	if err != nil {
		return err
	}
	// call_id names Verbatim's id only; sip_call_id the SIP one only.
	rs = slices.DeleteFunc(rs, func(r search.Result) bool {
		return in.CallID != "" && r.CallID != in.CallID || in.SIPCallID != "" && r.SIPCallID != in.SIPCallID
	})
	switch {
	case len(rs) == 0:
		return notFound(fmt.Sprintf("a call of call_id %q, sip_call_id %q or peripheral_id %q", in.CallID, in.SIPCallID, in.PeripheralID))
	case len(rs) > maxMetadataCalls:
		return &apiError{http.StatusConflict, "too_many_calls", fmt.Sprintf("more than %d calls have this id: name one by call_id", maxMetadataCalls)}
	}
	ev, personal := in.event(req.id)
	return s.commitMetadata(w, req, key, rs, ev, personal)
}

// event is the MetadataAttached of in, by id, and its personal part.
func (in *metadataIn) event(id auth.Identity) (*verbatimv1.MetadataAttached, *verbatimv1.MetadataPersonal) {
	at := time.Now()
	if in.OccurredAt != nil {
		at = *in.OccurredAt
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.New(at), Source: in.Source, AgentId: in.AgentID,
		SkillGroup: in.SkillGroup, RequestedService: in.RequestedService, WrapUpCode: in.WrapUpCode, PeripheralIds: in.PeripheralIDs}
	for _, name := range slices.Sorted(maps.Keys(in.Scores)) {
		ev.Scores = append(ev.Scores, &verbatimv1.Score{Name: name, Value: in.Scores[name], EvaluatorId: id.Subject})
	}
	return ev, &verbatimv1.MetadataPersonal{AgentName: in.AgentName, Ani: in.ANI, Dnis: in.DNIS,
		CallVariables: in.Variables, Comments: in.Comments}
}

// commentIn is a comment on a call.
type commentIn struct {
	Text string `json:"text"`
}

// comment adds a comment to a call: a MetadataAttached of source
// "comment", the text and its author sealed under the call's key.
func (s *Server) comment(w http.ResponseWriter, req *request) error {
	var in commentIn
	key, err := keyAndBody(req, &in)
	if err != nil {
		return err
	}
	if in.Text == "" || len(in.Text) > 2000 {
		return badRequest("text: 1 to 2,000 bytes")
	}
	c, err := s.callFor(req, PermComment)
	if err != nil {
		return err
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.Now(), Source: "comment"}
	return s.commitMetadata(w, req, key, []search.Result{c}, ev, &verbatimv1.MetadataPersonal{Comments: []string{in.Text},
		CallVariables: map[string]string{"comment_author": req.id.Subject}})
}

// tagsIn are tags to put on a call.
type tagsIn struct {
	Tags []string `json:"tags"`
}

var tagRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

// tag puts tags on a call: a MetadataAttached of source "tag", the tags
// in the clear (searchable), their author sealed.
func (s *Server) tag(w http.ResponseWriter, req *request) error {
	var in tagsIn
	key, err := keyAndBody(req, &in)
	if err != nil {
		return err
	}
	if len(in.Tags) == 0 || len(in.Tags) > 16 {
		return badRequest("tags: 1 to 16")
	}
	for _, t := range in.Tags {
		if !tagRE.MatchString(t) {
			return badRequest("tag %q: lower-case letters, digits, '.', '_', '-' (at most 32): a label, never personal data", t)
		}
	}
	c, err := s.callFor(req, PermComment)
	if err != nil {
		return err
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.Now(), Source: "tag", Tags: in.Tags}
	return s.commitMetadata(w, req, key, []search.Result{c}, ev, &verbatimv1.MetadataPersonal{CallVariables: map[string]string{"tag_author": req.id.Subject}})
}

// callFor is the call a request names, if its caller may see it and has
// permission need.
func (s *Server) callFor(req *request, need Permission) (search.Result, error) {
	c, g, err := s.call(req.r.Context(), req.id, req.target, false)
	if err != nil {
		return c, err
	}
	req.call = c.CallID
	if !g.may(need) {
		return c, g.forbid(need)
	}
	return c, nil
}

// commitMetadata seals personal under each call's data key into a copy
// of ev for it, and commits them with the request's audit event.
func (s *Server) commitMetadata(w http.ResponseWriter, req *request, key string, calls []search.Result, ev *verbatimv1.MetadataAttached, personal *verbatimv1.MetadataPersonal) error {
	plain, err := proto.Marshal(personal)
	if err != nil {
		return err
	}
	type attached struct {
		EventID string `json:"event_id"`
		CallID  string `json:"call_id"`
	}
	var recs []*kgo.Record
	var out []attached
	for _, c := range calls {
		if c.DataKeyID == "" {
			return &apiError{http.StatusConflict, "call_key_unknown", "the search projection does not know the data key of call " + c.CallID + " (projected before it kept them): rebuild it"}
		}
		sealer, err := s.sealer(req.r.Context(), req.id.Tenant, c.DataKeyID)
		if err != nil {
			return err
		}
		ce := proto.CloneOf(ev)
		if ce.Personal, err = sealer.Seal(nil, "verbatim.v1.MetadataPersonal", plain); err != nil {
			return err
		}
		ce.CallId = c.CallID
		id := schemas.DerivedID("api-metadata", req.id.Tenant, c.CallID, req.action, key)
		rec, err := schemas.NewRecord(schemas.TopicMetadata, []byte(c.CallID),
			schemas.Envelope{ID: id, Tenant: req.id.Tenant, CallID: c.CallID, OccurredAt: ce.GetOccurredAt().AsTime(), Producer: "verbatim-api"}, ce)
		if err != nil {
			return err
		}
		recs, out = append(recs, rec), append(out, attached{id, c.CallID})
	}
	ids := make([]string, len(out))
	for i, a := range out {
		ids[i] = a.CallID
	}
	audit := event(req.r, req.action, &req.id, strings.Join(ids, ","), nil)
	if len(ids) == 1 {
		audit.CallId = ids[0]
	}
	audit.EventId = schemas.DerivedID(out[0].EventID, "audit")
	arec, err := auditRecord(audit)
	if err != nil {
		return err
	}
	if err := s.cfg.Writer.Commit(req.r.Context(), append(recs, arec)...); err != nil {
		return &apiError{http.StatusServiceUnavailable, "unavailable", "the metadata and its audit event could not be committed; nothing was changed: try again with the same Idempotency-Key"}
	}
	req.audited = true // in the transaction above
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	if req.r.URL.Path == "/v1/metadata" {
		return json.NewEncoder(w).Encode(map[string]any{"attached": out})
	}
	return json.NewEncoder(w).Encode(out[0])
}

// sealer is the call's data key, from the registry, unwrapped.
func (s *Server) sealer(ctx context.Context, tenant, keyID string) (*seal.Sealer, error) {
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dk, err := s.cfg.Playback.Registry.Get(kctx, tenant, keyID)
	if err != nil {
		return nil, &apiError{http.StatusConflict, "call_key_unavailable", "the call's data key is not available (erased, or not yet read): " + err.Error()}
	}
	plain, err := s.cfg.Playback.Keys.UnwrapDataKey(ctx, tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
	if err != nil {
		return nil, err
	}
	return seal.New(tenant, keyID, plain)
}

// evaluationIn is a QA evaluation of a call: a form's criteria, each
// scored out of its maximum.
type evaluationIn struct {
	Form     string `json:"form"`
	Criteria []struct {
		Name  string  `json:"name"`
		Score float64 `json:"score"`
		Max   float64 `json:"max"`
		Note  string  `json:"note"`
	} `json:"criteria"`
	Comment string `json:"comment"`
}

var formRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// evaluate scores a call (the score permission): a MetadataAttached of
// source "evaluation" whose scores are "evaluation.FORM.CRITERION" for
// each criterion and "evaluation.FORM" for the total in percent; the
// comment, the notes and the evaluator are sealed under the call's key.
func (s *Server) evaluate(w http.ResponseWriter, req *request) error {
	var in evaluationIn
	key, err := keyAndBody(req, &in)
	if err != nil {
		return err
	}
	if !formRE.MatchString(in.Form) {
		return badRequest("form %q: lower-case letters, digits, '_', '-' (at most 64), e.g. \"sales-qa-v2\"", in.Form)
	}
	if len(in.Criteria) == 0 || len(in.Criteria) > 50 {
		return badRequest("criteria: 1 to 50")
	}
	if len(in.Comment) > 2000 {
		return badRequest("comment: longer than 2,000 bytes")
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.Now(), Source: "evaluation"}
	personal := &verbatimv1.MetadataPersonal{CallVariables: map[string]string{"evaluator": req.id.Subject, "evaluation_form": in.Form}}
	if in.Comment != "" {
		personal.Comments = append(personal.Comments, in.Comment)
	}
	var total, max float64
	seen := map[string]bool{}
	for _, c := range in.Criteria {
		switch {
		case !formRE.MatchString(c.Name) || seen[c.Name]:
			return badRequest("criterion %q: a unique name of lower-case letters, digits, '_', '-' (at most 64)", c.Name)
		case math.IsNaN(c.Max) || c.Max <= 0 || c.Max > 1000:
			return badRequest("criterion %q: max is more than 0 and at most 1,000", c.Name)
		case math.IsNaN(c.Score) || c.Score < 0 || c.Score > c.Max:
			return badRequest("criterion %q: score %v is not from 0 to its max %v", c.Name, c.Score, c.Max)
		case len(c.Note) > 1000:
			return badRequest("criterion %q: note longer than 1,000 bytes", c.Name)
		}
		seen[c.Name] = true
		total, max = total+c.Score, max+c.Max
		ev.Scores = append(ev.Scores, &verbatimv1.Score{Name: "evaluation." + in.Form + "." + c.Name, Value: c.Score, EvaluatorId: req.id.Subject})
		if c.Note != "" {
			personal.Comments = append(personal.Comments, c.Name+": "+c.Note)
		}
	}
	percent := math.Round(total/max*1000) / 10
	ev.Scores = append(ev.Scores, &verbatimv1.Score{Name: "evaluation." + in.Form, Value: percent, EvaluatorId: req.id.Subject})
	c, err := s.callFor(req, PermScore)
	if err != nil {
		return err
	}
	return s.commitMetadata(w, req, key, []search.Result{c}, ev, personal)
}
