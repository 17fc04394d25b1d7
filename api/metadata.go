package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/seal"
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
	key, err := idempotencyKey(req)
	if err != nil {
		return err
	}
	var in metadataIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if err := in.validate(); err != nil {
		return err
	}
	at := time.Now()
	if in.OccurredAt != nil {
		at = *in.OccurredAt
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.New(at), Source: in.Source, AgentId: in.AgentID,
		SkillGroup: in.SkillGroup, RequestedService: in.RequestedService, WrapUpCode: in.WrapUpCode, PeripheralIds: in.PeripheralIDs}
	for name, v := range in.Scores {
		ev.Scores = append(ev.Scores, &verbatimv1.Score{Name: name, Value: v, EvaluatorId: req.id.Subject})
	}
	return s.commitMetadata(w, req, key, ev, &verbatimv1.MetadataPersonal{AgentName: in.AgentName, Ani: in.ANI, Dnis: in.DNIS,
		CallVariables: in.Variables, Comments: in.Comments})
}

// commentIn is a comment on a call.
type commentIn struct {
	Text string `json:"text"`
}

// comment adds a comment to a call: a MetadataAttached of source
// "comment", the text and its author sealed under the call's key.
func (s *Server) comment(w http.ResponseWriter, req *request) error {
	key, err := idempotencyKey(req)
	if err != nil {
		return err
	}
	var in commentIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if in.Text == "" || len(in.Text) > 2000 {
		return badRequest("text: 1 to 2,000 bytes")
	}
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.Now(), Source: "comment"}
	return s.commitMetadata(w, req, key, ev, &verbatimv1.MetadataPersonal{Comments: []string{in.Text},
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
	key, err := idempotencyKey(req)
	if err != nil {
		return err
	}
	var in tagsIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
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
	ev := &verbatimv1.MetadataAttached{OccurredAt: timestamppb.Now(), Source: "tag", Tags: in.Tags}
	return s.commitMetadata(w, req, key, ev, &verbatimv1.MetadataPersonal{CallVariables: map[string]string{"tag_author": req.id.Subject}})
}

// commitMetadata seals personal under the call's data key into ev and
// commits it with the request's audit event.
func (s *Server) commitMetadata(w http.ResponseWriter, req *request, key string, ev *verbatimv1.MetadataAttached, personal *verbatimv1.MetadataPersonal) error {
	c, err := s.call(req.r.Context(), req.id, req.target, false)
	if err != nil {
		return err
	}
	if c.DataKeyID == "" {
		return &apiError{http.StatusConflict, "call_key_unknown", "the search projection does not know this call's data key (projected before it kept them): rebuild it"}
	}
	sealer, err := s.sealer(req.r.Context(), req.id.Tenant, c.DataKeyID)
	if err != nil {
		return err
	}
	plain, err := proto.Marshal(personal)
	if err != nil {
		return err
	}
	if ev.Personal, err = sealer.Seal(nil, "verbatim.v1.MetadataPersonal", plain); err != nil {
		return err
	}
	ev.CallId = c.CallID
	id := schemas.DerivedID("api-metadata", req.id.Tenant, c.CallID, req.action, key)
	rec, err := schemas.NewRecord(schemas.TopicMetadata, []byte(c.CallID),
		schemas.Envelope{ID: id, Tenant: req.id.Tenant, CallID: c.CallID, OccurredAt: ev.GetOccurredAt().AsTime(), Producer: "verbatim-api"}, ev)
	if err != nil {
		return err
	}
	audit := event(req.r, req.action, &req.id, c.CallID, nil)
	audit.EventId = schemas.DerivedID(id, "audit")
	arec, err := auditRecord(audit)
	if err != nil {
		return err
	}
	if err := s.cfg.Writer.Commit(req.r.Context(), rec, arec); err != nil {
		return &apiError{http.StatusServiceUnavailable, "unavailable", "the metadata and its audit event could not be committed; nothing was changed: try again with the same Idempotency-Key"}
	}
	req.audited = true // in the transaction above
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	return json.NewEncoder(w).Encode(map[string]string{"event_id": id, "call_id": c.CallID})
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
