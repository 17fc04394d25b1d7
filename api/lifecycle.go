package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Legal holds, erasure requests and early deletions, for administrators
// of the tenant (processors/lifecycle does the work). Releasing a hold
// and approving an early deletion take a second administrator: the one
// who asked is refused, 403 second_administrator_required. Each step is
// an audit event of its own, with the administrator as actor.

func (s *Server) lifecycleOr503() (*lifecycle.Lifecycle, error) {
	if s.cfg.Lifecycle == nil {
		return nil, &apiError{http.StatusServiceUnavailable, "lifecycle_unavailable", "this server is not configured for holds, erasure and deletion"}
	}
	return s.cfg.Lifecycle, nil
}

func (req *request) actor() *verbatimv1.Actor {
	return &verbatimv1.Actor{Subject: req.id.Subject, Role: "administrator", Tenant: req.id.Tenant}
}

// lifecycleError maps the lifecycle's errors onto answers.
func lifecycleError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lifecycle.ErrNotFound):
		return &apiError{http.StatusNotFound, "not_found", err.Error()}
	case errors.Is(err, lifecycle.ErrRefused) && strings.Contains(err.Error(), "second administrator"):
		return &apiError{http.StatusForbidden, "second_administrator_required", err.Error()}
	case errors.Is(err, lifecycle.ErrRefused):
		return &apiError{http.StatusConflict, "conflict", err.Error()}
	}
	return err
}

// protoJSON writes a lifecycle record as protobuf JSON (field names as
// in the .proto).
func protoJSON(w http.ResponseWriter, status int, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

type holdIn struct {
	Label   string   `json:"label"`
	Reason  string   `json:"reason"`
	CallIDs []string `json:"call_ids"`
	Party   string   `json:"party"`
}

// placeHold is POST /v1/holds.
func (s *Server) placeHold(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	var in holdIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if in.Label == "" || in.Reason == "" || len(in.CallIDs) > 10000 || (len(in.CallIDs) == 0 && in.Party == "") {
		return badRequest("a hold has a label, a reason, and call_ids (at most 10,000), a party, or both")
	}
	h, err := l.PlaceHold(req.r.Context(), lifecycle.HoldRequest{Tenant: req.id.Tenant, Label: in.Label, Reason: in.Reason, CallIDs: in.CallIDs,
		Party: in.Party, By: req.actor()})
	if err != nil {
		return lifecycleError(err)
	}
	req.audited, req.target = true, h.GetHoldId() // hold.place, by the lifecycle
	return protoJSON(w, http.StatusCreated, h)
}

// listHolds is GET /v1/holds.
func (s *Server) listHolds(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	if _, err := query(req.r); err != nil {
		return err
	}
	if err := l.Registry().Sync(req.r.Context()); err != nil {
		return &apiError{http.StatusServiceUnavailable, "lifecycle_unavailable", err.Error()}
	}
	out := &verbatimv1.LegalHoldList{Holds: l.Registry().Holds(req.id.Tenant)}
	return protoJSON(w, http.StatusOK, out)
}

// releaseHold is POST /v1/holds/{id}/release: the first administrator
// asks; the hold stays in force.
func (s *Server) releaseHold(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	h, err := l.RequestRelease(req.r.Context(), req.id.Tenant, req.r.PathValue("id"), req.actor())
	if err != nil {
		return lifecycleError(err)
	}
	req.audited = true
	return protoJSON(w, http.StatusAccepted, h)
}

// approveHoldRelease is POST /v1/holds/{id}/release/approve: a second
// administrator releases the hold.
func (s *Server) approveHoldRelease(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	h, err := l.ApproveRelease(req.r.Context(), req.id.Tenant, req.r.PathValue("id"), req.actor())
	if err != nil {
		return lifecycleError(err)
	}
	req.audited = true
	return protoJSON(w, http.StatusOK, h)
}

type erasureIn struct {
	Subject string `json:"subject"`
	Reason  string `json:"reason"`
}

// erase is POST /v1/erasure: the subject's calls of the tenant erased
// where no retention obligation or hold applies; the others refused with
// the reason. The answer is the request's record.
func (s *Server) erase(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	var in erasureIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if in.Subject == "" || len(in.Subject) > 256 || in.Reason == "" || len(in.Reason) > 1024 {
		return badRequest("subject (a phone number, SIP URI, e-mail address or agent id, 1 to 256 bytes) and reason (the request's ground) are required")
	}
	rec, err := l.Erase(req.r.Context(), lifecycle.ErasureRequest{Tenant: req.id.Tenant, Subject: in.Subject, Reason: in.Reason, By: req.actor()})
	if err != nil {
		return lifecycleError(err)
	}
	req.audited, req.target = true, rec.GetRequestId()
	return protoJSON(w, http.StatusOK, rec)
}

// getErasure is GET /v1/erasure/{id}: the request's record and its proof.
func (s *Server) getErasure(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	p, err := l.Prove(req.r.Context(), req.id.Tenant, req.r.PathValue("id"), s.cfg.Playback.Registry, s.cfg.Playback.Keys)
	if err != nil {
		return lifecycleError(err)
	}
	rec, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p.Request)
	if err != nil {
		return err
	}
	return writeJSON(w, map[string]any{"request": json.RawMessage(rec), "proof": p, "keys_gone_from_log_within_seconds": p.KeysGoneWithin / time.Second})
}

type deletionIn struct {
	CallIDs []string `json:"call_ids"`
	Reason  string   `json:"reason"`
}

// requestDeletion is POST /v1/deletions: the first administrator asks to
// delete calls inside their retention; nothing happens until a second
// approves.
func (s *Server) requestDeletion(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	var in deletionIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if len(in.CallIDs) == 0 || len(in.CallIDs) > 1000 || in.Reason == "" || len(in.Reason) > 1024 {
		return badRequest("call_ids (1 to 1,000) and reason (why the law allows it) are required")
	}
	d, err := l.RequestDeletion(req.r.Context(), req.id.Tenant, in.CallIDs, in.Reason, req.actor())
	if err != nil {
		return lifecycleError(err)
	}
	req.audited, req.target = true, d.GetDeletionId()
	return protoJSON(w, http.StatusAccepted, d)
}

// approveDeletion is POST /v1/deletions/{id}/approve.
func (s *Server) approveDeletion(w http.ResponseWriter, req *request) error {
	l, err := s.lifecycleOr503()
	if err != nil {
		return err
	}
	d, err := l.ApproveDeletion(req.r.Context(), req.id.Tenant, req.r.PathValue("id"), req.actor())
	if err != nil {
		return lifecycleError(err)
	}
	req.audited = true
	return protoJSON(w, http.StatusOK, d)
}
