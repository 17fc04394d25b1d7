package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/verbatimrec/verbatim/internal/keys"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
)

// The audit log for auditors: entries by call, user, action, result and
// time, exported as CSV or XLSX; its latest signed checkpoint; and proofs
// that anyone holding a checkpoint checks offline (verbatim audit check).

func (s *Server) auditQuery(req *request) (auditlog.Query, map[string]string, error) {
	p, err := query(req.r, "call_id", "actor", "action", "result", "from", "to", "sort", "limit", "cursor", "format")
	if err != nil {
		return auditlog.Query{}, nil, err
	}
	q := auditlog.Query{Tenant: req.id.Tenant, CallID: p["call_id"], Actor: p["actor"], Action: p["action"], Result: p["result"], After: p["cursor"], Limit: 100}
	for name, v := range map[string]string{"call_id": q.CallID, "actor": q.Actor, "action": q.Action} {
		if len(v) > 256 {
			return q, nil, badRequest("%s: longer than 256 bytes", name)
		}
	}
	switch q.Result {
	case "", "SUCCESS", "DENIED", "ERROR":
	default:
		return q, nil, badRequest("result: %q is SUCCESS, DENIED or ERROR", q.Result)
	}
	for name, dst := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if v := p[name]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return q, nil, badRequest("%s: %q is not an RFC 3339 time", name, v)
			}
			*dst = t
		}
	}
	switch p["sort"] {
	case "", "index":
	case "-index":
		q.Descending = true
	default:
		return q, nil, badRequest("sort: %q is index (log order) or -index (newest first)", p["sort"])
	}
	if v := p["limit"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > auditlog.MaxLimit {
			return q, nil, badRequest("limit: %q is not a number from 1 to %d", v, auditlog.MaxLimit)
		}
		q.Limit = n
	}
	if q.After != "" && !auditlog.ValidCursor(q.After) {
		return q, nil, badRequest("cursor: %q is not a cursor this API gave", q.After)
	}
	return q, p, nil
}

// searchAudit lists the tenant's audit entries, or exports them.
func (s *Server) searchAudit(w http.ResponseWriter, req *request) error {
	q, p, err := s.auditQuery(req)
	if err != nil {
		return err
	}
	switch f := p["format"]; f {
	case "", "json":
	case "csv", "xlsx":
		req.action = "audit.export"
		ct := map[string]string{"csv": "text/csv; charset=utf-8", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}[f]
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "verbatim-audit-"+req.id.Tenant+"."+f))
		if _, err := auditlog.Export(req.r.Context(), s.cfg.Conn, s.cfg.Database, q, f, w); err != nil {
			return err // after the first byte: logged only
		}
		return nil
	default:
		return badRequest("format: %q is json, csv or xlsx", f)
	}
	es, next, err := auditlog.Search(req.r.Context(), s.cfg.Conn, s.cfg.Database, q)
	if err != nil {
		return err
	}
	if es == nil {
		es = []auditlog.Entry{}
	}
	return writeJSON(w, map[string]any{"entries": es, "next_cursor": next})
}

// verifierKey is the checkpoints' verifier key, if the key manager signs
// them.
func (s *Server) verifierKey(req *request) string {
	if signer, ok := s.cfg.Playback.Keys.(keys.AuditSigner); ok {
		if k, err := auditlog.VerifierKey(req.r.Context(), signer); err == nil {
			return k
		}
	}
	return ""
}

// auditCheckpoint is the tenant's latest signed checkpoint.
func (s *Server) auditCheckpoint(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	signed, size, err := auditlog.Latest(req.r.Context(), s.cfg.Conn, s.cfg.Database, req.id.Tenant)
	if err != nil {
		return notFound("a signed checkpoint of the tenant's audit log")
	}
	return writeJSON(w, map[string]any{"size": size, "checkpoint": signed, "verifier_key": s.verifierKey(req), "origin": auditlog.Origin(req.id.Tenant)})
}

// auditProof is the inclusion proof of an event (event_id), or of a
// call's stored recordings (call_id: the chain of custody).
func (s *Server) auditProof(w http.ResponseWriter, req *request) error {
	p, err := query(req.r, "event_id", "call_id")
	if err != nil {
		return err
	}
	if (p["event_id"] == "") == (p["call_id"] == "") {
		return badRequest("give event_id (an event) or call_id (a call's stored recordings), one of them")
	}
	var proofs []auditlog.InclusionProof
	if id := p["event_id"]; id != "" {
		proofs, err = auditlog.Prove(req.r.Context(), s.cfg.Conn, s.cfg.Database, req.id.Tenant, id)
	} else {
		req.call = p["call_id"]
		proofs, err = auditlog.ProveRecording(req.r.Context(), s.cfg.Conn, s.cfg.Database, req.id.Tenant, p["call_id"])
	}
	if err != nil {
		return notFound("a proof (" + err.Error() + ")")
	}
	return writeJSON(w, map[string]any{"proofs": proofs, "verifier_key": s.verifierKey(req)})
}

// auditConsistency proves the log of size old a prefix of the log of
// size new (both signed).
func (s *Server) auditConsistency(w http.ResponseWriter, req *request) error {
	p, err := query(req.r, "old", "new")
	if err != nil {
		return err
	}
	o, err1 := strconv.ParseInt(p["old"], 10, 64)
	n, err2 := strconv.ParseInt(p["new"], 10, 64)
	if err1 != nil || err2 != nil || o <= 0 || n < o {
		return badRequest("old and new: sizes of signed checkpoints, 0 < old <= new")
	}
	c, err := auditlog.Consistency(req.r.Context(), s.cfg.Conn, s.cfg.Database, req.id.Tenant, o, n)
	if err != nil {
		return notFound("a consistency proof (" + err.Error() + ")")
	}
	return writeJSON(w, c)
}
