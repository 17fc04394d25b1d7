// Package api is Verbatim's management layer over HTTPS: signed-in users
// of a tenant search calls, read a call's parties, metadata and
// completeness ledger, and play or download its recording, decrypted on
// the fly with HTTP Range. Every request carries an OpenID Connect bearer
// token (api/auth); the tenant comes only from the token and scopes every
// query; and every request, refused ones too, is recorded as an
// AuditEvent on the audit topic before any data leaves.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3.1 document.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// Config configures the API.
type Config struct {
	// Verifier checks bearer tokens. Required.
	Verifier *auth.Verifier
	// Conn and Database are the search projection. Required.
	Conn     driver.Conn
	Database string
	// Playback decrypts recordings. Required.
	Playback *playback.Opener
	// Audit records every request. Required: without it, nothing is
	// served.
	Audit Auditor
	// Writer commits what a request changes with its audit event.
	// Required.
	Writer Writer
	// Policies are the group policies (StartPolicies). Required.
	Policies *Policies
	// Web, if set, lets people sign in to the web page (served at /).
	Web *WebConfig
	// ServiceAccounts are the programs that authenticate with a client
	// certificate (the TLS server verifies it against the service CA), by
	// the certificate's common name.
	ServiceAccounts map[string]ServiceAccount
	// Lifecycle, if set, serves legal holds, erasure requests and early
	// deletions; without it those endpoints answer 503.
	Lifecycle *lifecycle.Lifecycle
	// SpoolDir holds a recording while it is decrypted and served; default
	// os.TempDir().
	SpoolDir string
	// Logger, default discard.
	Logger *slog.Logger
	// Metrics, if set, receives verbatim_api_requests_total{operation,
	// code} and verbatim_api_request_seconds{operation}.
	Metrics prometheus.Registerer
}

// Server is the API's handler.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	cookies *cookieBox
	exports exports
	routes  []string // "GET /v1/calls", as OpenAPI names them
	// requests and latency are the request metrics (nil without
	// Config.Metrics).
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// policyMu makes this server's policy changes one at a time.
	policyMu sync.Mutex
}

// Routes lists the operations the server serves, as "METHOD /path/{param}".
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// maxQuery bounds a request's query string; request bodies are refused
// on the read-only endpoints of this version.
const maxQuery = 4 << 10

// New returns the API's handler.
func New(cfg Config) (*Server, error) {
	if cfg.Verifier == nil || cfg.Conn == nil || cfg.Playback == nil || cfg.Audit == nil || cfg.Writer == nil || cfg.Policies == nil {
		return nil, errors.New("api: a verifier, the search projection, playback, an auditor, a writer and the group policies are required")
	}
	if err := search.ValidDatabase(cfg.Database); err != nil {
		return nil, err
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var sessionKey []byte
	if cfg.Web != nil {
		sessionKey = cfg.Web.SessionKey
	}
	cookies, err := newCookieBox(sessionKey)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), cookies: cookies, exports: exports{jobs: map[string]*exportJob{}}}
	if cfg.Metrics != nil {
		s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "verbatim", Subsystem: "api", Name: "requests_total",
			Help: "Requests by operation (the audit action) and HTTP status code, refused ones too."}, []string{"operation", "code"})
		s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "verbatim", Subsystem: "api", Name: "request_seconds",
			Help: "Time to answer a request, by operation.", Buckets: prometheus.DefBuckets}, []string{"operation"})
		if err := errors.Join(cfg.Metrics.Register(s.requests), cfg.Metrics.Register(s.latency)); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	s.register()
	return s, nil
}

// register adds the endpoints to the server's mux.
func (s *Server) register() {
	s.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	readers := []auth.Role{auth.RoleUser, auth.RoleSupervisor, auth.RoleAdministrator}
	s.route("GET /v1/me", "session.read", nil, 0, s.me)
	s.route("GET /v1/calls", "call.search", readers, 0, s.searchCalls)
	s.route("GET /v1/calls/{id}", "call.read", readers, 0, s.getCall)
	s.route("GET /v1/calls/{id}/recording", "recording.play", readers, 0, s.recording)
	s.route("POST /v1/calls/{id}/metadata", "metadata.attach", append(slices.Clone(readers), auth.RoleService), maxMetadataBody, s.attachMetadata)
	s.route("POST /v1/calls/{id}/comments", "comment.add", readers, 4<<10, s.comment)
	s.route("POST /v1/calls/{id}/tags", "tag.add", readers, 4<<10, s.tag)
	s.route("POST /v1/calls/{id}/evaluations", "evaluation.add", readers, 16<<10, s.evaluate)
	s.route("POST /v1/metadata", "metadata.attach", append(slices.Clone(readers), auth.RoleService), maxMetadataBody, s.attachMetadataByID)
	admins := []auth.Role{auth.RoleAdministrator}
	s.route("GET /v1/groups", "group.list", admins, 0, s.listGroups)
	s.route("PUT /v1/groups/{id}", "group.set", admins, 16<<10, s.setGroup)
	s.route("DELETE /v1/groups/{id}", "group.remove", admins, 0, s.removeGroup)
	s.route("PUT /v1/groups/{id}/permissions/{permission}", "group.grant", admins, 0, s.changePermission(true))
	s.route("DELETE /v1/groups/{id}/permissions/{permission}", "group.revoke", admins, 0, s.changePermission(false))
	s.route("GET /v1/subjects/report", "subject.report", admins, 0, s.subjectReport)
	s.route("GET /v1/holds", "hold.list", admins, 0, s.listHolds)
	s.route("POST /v1/holds", "hold.place", admins, 64<<10, s.placeHold)
	s.route("POST /v1/holds/{id}/release", "hold.release_request", admins, 0, s.releaseHold)
	s.route("POST /v1/holds/{id}/release/approve", "hold.release", admins, 0, s.approveHoldRelease)
	s.route("POST /v1/erasure", "erasure.request", admins, 4<<10, s.erase)
	s.route("GET /v1/erasure/{id}", "erasure.read", admins, 0, s.getErasure)
	s.route("POST /v1/deletions", "deletion.request", admins, 64<<10, s.requestDeletion)
	s.route("POST /v1/deletions/{id}/approve", "deletion.approve", admins, 0, s.approveDeletion)
	auditors := []auth.Role{auth.RoleAuditor}
	s.route("GET /v1/audit", "audit.search", auditors, 0, s.searchAudit)
	s.route("GET /v1/audit/checkpoint", "audit.checkpoint", auditors, 0, s.auditCheckpoint)
	s.route("GET /v1/audit/proof", "audit.prove", auditors, 0, s.auditProof)
	s.route("GET /v1/audit/consistency", "audit.consistency", auditors, 0, s.auditConsistency)
	exporters := []auth.Role{auth.RoleSupervisor, auth.RoleAdministrator}
	s.route("POST /v1/exports", "export.create", exporters, 4<<10, s.createExport)
	s.route("GET /v1/exports/{id}", "export.read", exporters, 0, s.getExport)
	s.route("GET /v1/exports/{id}/download", "export.download", exporters, 0, s.downloadExport)
	s.registerWeb()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Refused and audited like any request, with who asked if the
		// token says so.
		var req *request
		if raw, ok := bearer(r); ok {
			if id, err := s.cfg.Verifier.Verify(r.Context(), raw); err == nil {
				req = &request{id: id, r: r}
			}
		}
		s.refuse(w, r, "endpoint.unknown", req, &apiError{http.StatusNotFound, "not_found", "no such endpoint: " + r.Method + " " + r.URL.Path + " (see /openapi.json)"})
	})
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// request is one authenticated request: who, and its audit record.
type request struct {
	id     auth.Identity
	r      *http.Request
	action string
	target string // the call, or the recording, it reads
	call   string // the call, once found
	// audited: the handler committed the audit event itself, with the
	// change it made.
	audited bool
}

// handler serves an authenticated request. It returns the audit result:
// nil (success), or an *apiError (refused or failed), which route writes.
// A handler that sends data calls req.allow first: the audit event is
// committed before the data leaves.
type handler func(w http.ResponseWriter, req *request) error

// apiError is an error a client gets: an HTTP status, a stable code and
// a reason.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func badRequest(format string, a ...any) error {
	return &apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, a...)}
}

func notFound(what string) error {
	return &apiError{http.StatusNotFound, "not_found", what + " not found"}
}

// route registers an endpoint that needs a token with one of roles (any
// role if nil), and takes a body of at most maxBody bytes (none if 0).
func (s *Server) route(pattern, action string, roles []auth.Role, maxBody int64, h handler) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
		w := rw
		if s.requests != nil {
			sw := &statusWriter{ResponseWriter: rw}
			w = sw
			began := time.Now()
			defer func() {
				s.requests.WithLabelValues(action, strconv.Itoa(sw.code())).Inc()
				s.latency.WithLabelValues(action).Observe(time.Since(began).Seconds())
			}()
		}
		if len(r.URL.RawQuery) > maxQuery {
			s.refuse(w, r, action, nil, &apiError{http.StatusRequestURITooLong, "query_too_long", fmt.Sprintf("the query string is longer than %d bytes", maxQuery)})
			return
		}
		id, err := s.authenticate(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				ae = &apiError{http.StatusUnauthorized, "unauthenticated", err.Error()}
			}
			s.refuse(w, r, action, nil, ae)
			return
		}
		req := &request{id: id, r: r, action: action, target: r.PathValue("id")}
		switch {
		case maxBody == 0 && (r.ContentLength > 0 || len(r.TransferEncoding) > 0):
			s.refuse(w, r, action, req, &apiError{http.StatusRequestEntityTooLarge, "body_not_allowed", "this endpoint takes no request body"})
			return
		case r.ContentLength > maxBody:
			s.refuse(w, r, action, req, &apiError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", maxBody)})
			return
		case maxBody > 0 && !isJSON(r.Header.Get("Content-Type")):
			s.refuse(w, r, action, req, &apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be application/json"})
			return
		}
		if maxBody > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		if roles != nil && !slices.ContainsFunc(roles, id.Has) {
			s.refuse(w, r, action, req, &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("%s needs one of the roles %v; the token has %v", action, roles, id.Roles)})
			return
		}
		err = h(&auditedWriter{ResponseWriter: w, s: s, req: req}, req)
		var ae *apiError
		switch {
		case err == nil:
		case errors.As(err, &ae):
			s.refuse(w, r, action, req, ae)
		default:
			s.cfg.Logger.Error("request failed", "action", action, "err", err)
			s.refuse(w, r, action, req, &apiError{http.StatusInternalServerError, "internal", "the request failed; it is logged"})
		}
	})
}

// auditedWriter commits the request's success audit event before the
// first byte of the response: no audit, no data.
// statusWriter notes the status code a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

type auditedWriter struct {
	http.ResponseWriter
	s       *Server
	req     *request
	audited bool
	failed  bool
}

func (w *auditedWriter) allow() bool {
	if w.audited {
		return !w.failed
	}
	w.audited = true
	if w.req.audited {
		return true
	}
	ev := event(w.req.r, w.req.action, &w.req.id, w.req.target, nil)
	ev.CallId = w.req.call
	if err := w.s.cfg.Audit.Record(w.req.r.Context(), ev); err != nil {
		w.failed = true
		w.s.cfg.Logger.Error("audit event not written: nothing is served", "action", w.req.action, "err", err)
		writeError(w.ResponseWriter, http.StatusServiceUnavailable, "audit_unavailable", "the audit log cannot be written, so nothing is served")
		return false
	}
	return true
}

func (w *auditedWriter) WriteHeader(code int) {
	if w.allow() {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *auditedWriter) Write(b []byte) (int, error) {
	if !w.allow() {
		return 0, errors.New("api: audit event not written")
	}
	return w.ResponseWriter.Write(b)
}

// refuse audits a refused or failed request, then answers it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, action string, req *request, e *apiError) {
	var id *auth.Identity
	target, call := r.PathValue("id"), ""
	if req != nil {
		id, target, call = &req.id, req.target, req.call
	}
	if aw, ok := w.(*auditedWriter); ok && aw.audited {
		// The success event is written and data has gone: log only.
		s.cfg.Logger.Error("request failed after its response began", "action", action, "err", e)
		return
	}
	ev := event(r, action, id, target, e)
	ev.CallId = call
	if err := s.cfg.Audit.Record(r.Context(), ev); err != nil {
		s.cfg.Logger.Error("audit event of a refused request not written", "action", action, "err", err)
	}
	if aw, ok := w.(*auditedWriter); ok {
		w = aw.ResponseWriter
	}
	writeError(w, e.status, e.code, e.message)
}

// authenticate finds who is calling: a bearer token, else the web
// session's cookie, else a service account's client certificate.
func (s *Server) authenticate(r *http.Request) (auth.Identity, error) {
	raw, ok := bearer(r)
	viaCookie := false
	if !ok {
		raw, viaCookie = s.sessionToken(r)
	}
	if raw == "" {
		id, present, err := s.serviceIdentity(r)
		switch {
		case err != nil:
			return auth.Identity{}, err
		case present:
			return id, nil
		}
		return auth.Identity{}, &apiError{http.StatusUnauthorized, "unauthenticated", "an Authorization: Bearer token, a web session or a service account's client certificate is required"}
	}
	if viaCookie && r.Method != http.MethodGet && r.Header.Get(csrfHeader) != "1" {
		return auth.Identity{}, &apiError{http.StatusForbidden, "csrf", "a change made with the session cookie needs the " + csrfHeader + ": 1 header (pages of other sites cannot send it)"}
	}
	return s.cfg.Verifier.Verify(r.Context(), raw)
}

// isJSON reports whether a Content-Type is application/json (any
// parameters, such as charset=utf-8).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (s *Server) me(w http.ResponseWriter, req *request) error {
	return writeJSON(w, req.id)
}

// query reads the allowed parameters of a request; any other is refused.
func query(r *http.Request, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for k, vs := range r.URL.Query() {
		if !slices.Contains(allowed, k) {
			return nil, badRequest("unknown parameter %q (this endpoint takes %v)", k, allowed)
		}
		if len(vs) != 1 {
			return nil, badRequest("parameter %q given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

func (s *Server) searchCalls(w http.ResponseWriter, req *request) error {
	p, err := query(req.r, "from", "to", "party", "call_id", "conversation", "agent", "skill_group", "variable", "tag", "status", "sort", "limit", "cursor", "history")
	if err != nil {
		return err
	}
	q := search.Query{Tenant: req.id.Tenant, Party: p["party"], CallID: p["call_id"], Conversation: p["conversation"], After: p["cursor"], Limit: 100,
		Agent: p["agent"], SkillGroup: p["skill_group"], Status: p["status"], Tag: p["tag"]}
	if v := p["variable"]; v != "" {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return badRequest("variable: %q is not NAME=VALUE", v)
		}
		q.Variable = &search.Variable{Name: name, Value: value}
	}
	if q.Status != "" && !slices.Contains(schemas.RecordingStatuses, q.Status) {
		return badRequest("status: %q is not one of %q", q.Status, schemas.RecordingStatuses)
	}
	switch p["sort"] {
	case "", "started_at":
	case "-started_at":
		q.Descending = true
	default:
		return badRequest("sort: %q is started_at (oldest first) or -started_at (newest first)", p["sort"])
	}
	for name, dst := range map[string]*time.Time{"from": &q.From, "to": &q.To} {
		if v := p[name]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return badRequest("%s: %q is not an RFC 3339 time", name, v)
			}
			*dst = t
		}
	}
	if v := p["limit"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > search.MaxLimit {
			return badRequest("limit: %q is not a number from 1 to %d", v, search.MaxLimit)
		}
		q.Limit = n
	}
	if v := p["history"]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badRequest("history: %q is not true or false", v)
		}
		q.History = b
	}
	if q.After != "" && !search.ValidCursor(q.After) {
		return badRequest("cursor: %q is not a cursor this API gave", q.After)
	}
	g, err := s.grants(req.r.Context(), req.id)
	if err != nil {
		return err
	}
	g.scope(&q)
	rs, next, err := search.SearchPage(req.r.Context(), s.cfg.Conn, s.cfg.Database, q)
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []search.Result{}
	}
	return writeJSON(w, map[string]any{"calls": rs, "next_cursor": next})
}

// call finds the tenant's call id (Verbatim's id), as the identity may
// see it, and what the identity may do with it; a call it may not see is
// not found, never forbidden.
func (s *Server) call(ctx context.Context, id auth.Identity, callID string, history bool) (search.Result, grants, error) {
	if callID == "" || len(callID) > 128 {
		return search.Result{}, grants{}, badRequest("call id %q", callID)
	}
	g, err := s.grants(ctx, id)
	if err != nil {
		return search.Result{}, g, err
	}
	q := search.Query{Tenant: id.Tenant, CallID: callID, Limit: 2, History: history}
	g.scope(&q)
	rs, _, err := search.SearchPage(ctx, s.cfg.Conn, s.cfg.Database, q)
	if err != nil {
		return search.Result{}, g, err
	}
	for _, r := range rs {
		if r.CallID == callID {
			return r, g, nil
		}
	}
	return search.Result{}, g, notFound("call " + callID)
}

func (s *Server) getCall(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	c, _, err := s.call(req.r.Context(), req.id, req.target, true)
	if err != nil {
		return err
	}
	req.call = c.CallID
	return writeJSON(w, c)
}

// recording streams a call's recording, decrypted and verified, with
// HTTP Range.
func (s *Server) recording(w http.ResponseWriter, req *request) error {
	p, err := query(req.r, "recording", "download")
	if err != nil {
		return err
	}
	c, g, err := s.call(req.r.Context(), req.id, req.target, true)
	if err != nil {
		return err
	}
	req.call = c.CallID
	if v := p["download"]; v != "" && v != "true" && v != "false" {
		return badRequest("download: %q is not true or false", v)
	}
	if need := PermPlay; !g.may(need) || p["download"] == "true" && !g.may(PermDownload) {
		if g.may(need) {
			need = PermDownload
		}
		return g.forbid(need)
	}
	rec := c.Recording
	if id := p["recording"]; id != "" {
		all := c.History
		if rec != nil {
			all = append([]search.Recording{*rec}, all...)
		}
		rec = nil
		for _, r := range all {
			if r.RecordingID == id {
				rec = &r
			}
		}
		if rec == nil {
			return notFound("recording " + id + " of call " + c.CallID)
		}
	}
	if rec == nil || rec.Failure != "" || rec.ObjectKey == "" {
		return notFound("a recording of call " + c.CallID)
	}
	f, err := os.CreateTemp(s.cfg.SpoolDir, "verbatim-api-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil { // nothing of it outlives the request
		return err
	}
	if _, err := s.cfg.Playback.Decrypt(req.r.Context(), req.id.Tenant, rec.KeyID,
		playback.Object{Key: rec.ObjectKey, CiphertextSHA256: rec.CiphertextSHA256, PlaintextSHA256: rec.PlaintextSHA256}, f); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	req.target = rec.RecordingID
	if p["download"] == "true" {
		req.action = "recording.download"
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", c.CallID+".wav"))
	}
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("ETag", `"`+rec.PlaintextSHA256+`"`)
	http.ServeContent(w, req.r, "", rec.StoredAt, f)
	return nil
}

// NewForDocs returns a server that serves nothing, for listing its
// routes (Routes) without a verifier, projection or auditor.
func NewForDocs() (*Server, error) {
	s := &Server{mux: http.NewServeMux()}
	s.register()
	return s, nil
}
