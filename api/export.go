package api

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// Exports: a background job writes the recordings a search selects,
// decrypted and verified, with each call's JSON (parties, metadata,
// ledgers) and a manifest of SHA-256 digests, into one zip; the client
// follows its progress and downloads it when done. Every recording
// exported is audited before it is written.

// MaxExportCalls bounds the calls of one export.
const MaxExportCalls = 10000

// maxExportsRunning bounds the exports a tenant runs at once.
const maxExportsRunning = 2

// exportKept is how long a finished export's zip is kept for download.
const exportKept = 24 * time.Hour

type exportIn struct {
	From       *time.Time `json:"from"`
	To         *time.Time `json:"to"`
	Party      string     `json:"party"`
	CallID     string     `json:"call_id"`
	Agent      string     `json:"agent"`
	SkillGroup string     `json:"skill_group"`
	Status     string     `json:"status"`
	Tag        string     `json:"tag"`
	// Format is "zip" (the default: each call's JSON as search shows
	// it) or "vcon" (each call as a vCon, for portability, Art. 20).
	Format string `json:"format"`
}

// exportState is what a client sees of an export.
type exportState struct {
	ID        string    `json:"export_id"`
	CreatedAt time.Time `json:"created_at"`
	State     string    `json:"state"` // running, done, failed
	Format    string    `json:"format"`
	Selected  int       `json:"calls_selected"`
	Written   int       `json:"recordings_written"`
	// Without lists the selected calls with no recording to export, and
	// why (failed, missing, in progress).
	Without map[string]string `json:"calls_without_recording,omitempty"`
	Error   string            `json:"error,omitempty"`
	Size    int64             `json:"size_bytes,omitempty"`
}

// exportJob is one export: its state, guarded by mu, and where it is.
type exportJob struct {
	tenant, creator, path string

	mu sync.Mutex
	exportState
}

// snapshot copies the job's state.
func (j *exportJob) snapshot() exportState {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.exportState
	st.Without = maps.Clone(j.Without)
	return st
}

type exports struct {
	mu   sync.Mutex
	jobs map[string]*exportJob
}

func (s *Server) createExport(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	var in exportIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	g, err := s.grants(req.r.Context(), req.id)
	if err != nil {
		return err
	}
	if !g.may(PermExport) {
		return g.forbid(PermExport)
	}
	q := search.Query{Tenant: req.id.Tenant, Party: in.Party, CallID: in.CallID, Agent: in.Agent, SkillGroup: in.SkillGroup, Status: in.Status,
		Tag: in.Tag, Limit: search.MaxLimit}
	g.scope(&q)
	if in.From != nil {
		q.From = *in.From
	}
	if in.To != nil {
		q.To = *in.To
	}
	if q.Status != "" && !slices.Contains(schemas.RecordingStatuses, q.Status) {
		return badRequest("status: %q is not one of %q", q.Status, schemas.RecordingStatuses)
	}
	switch in.Format {
	case "":
		in.Format = "zip"
	case "zip", "vcon":
	default:
		return badRequest("format: %q is not zip or vcon", in.Format)
	}
	s.exports.mu.Lock()
	running := 0
	for id, j := range s.exports.jobs {
		j.mu.Lock()
		if j.tenant == req.id.Tenant && j.State == "running" {
			running++
		}
		if j.State != "running" && time.Since(j.CreatedAt) > exportKept {
			os.Remove(j.path) // the decrypted recordings do not outlive their time
			delete(s.exports.jobs, id)
		}
		j.mu.Unlock()
	}
	if running >= maxExportsRunning {
		s.exports.mu.Unlock()
		return &apiError{http.StatusTooManyRequests, "too_many_exports", fmt.Sprintf("the tenant has %d exports running already: wait for one to end", running)}
	}
	f, err := os.CreateTemp(s.cfg.SpoolDir, "verbatim-export-*.zip")
	if err != nil {
		s.exports.mu.Unlock()
		return err
	}
	j := &exportJob{tenant: req.id.Tenant, creator: req.id.Subject, path: f.Name(),
		exportState: exportState{ID: schemas.RandomID(), CreatedAt: time.Now().UTC(), State: "running", Format: in.Format, Without: map[string]string{}}}
	s.exports.jobs[j.ID] = j
	s.exports.mu.Unlock()
	req.target = j.ID
	go s.runExport(j, f, q, req) // ends on its own; its state is the job's
	w.Header().Set("Location", "/v1/exports/"+j.ID)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	return json.NewEncoder(w).Encode(j.snapshot())
}

// runExport writes the export's zip.
func (s *Server) runExport(j *exportJob, f *os.File, q search.Query, req *request) {
	ctx := context.WithoutCancel(req.r.Context())
	fail := func(err error) {
		s.cfg.Logger.Error("export failed", "export", j.ID, "err", err)
		j.mu.Lock()
		j.State, j.Error = "failed", err.Error()
		j.mu.Unlock()
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	var manifest, docs []exportEntry
	for {
		rs, next, err := search.SearchPage(ctx, s.cfg.Conn, s.cfg.Database, q)
		if err != nil {
			fail(err)
			return
		}
		j.mu.Lock()
		j.Selected += len(rs)
		over := j.Selected > MaxExportCalls
		j.mu.Unlock()
		if over {
			fail(fmt.Errorf("more than %d calls selected: export a shorter time range", MaxExportCalls))
			return
		}
		for _, c := range rs {
			if err := s.exportCall(ctx, zw, j, q.Tenant, c, req, &manifest, &docs); err != nil {
				fail(err)
				return
			}
		}
		if next == "" {
			break
		}
		q.After = next
	}
	mf, err := zw.Create("manifest.json")
	if err == nil {
		err = json.NewEncoder(mf).Encode(map[string]any{"export_id": j.ID, "tenant": q.Tenant, "created_at": j.CreatedAt, "by": j.creator,
			"format": j.Format, "recordings": manifest, "documents": docs, "calls_without_recording": j.snapshot().Without})
	}
	if err == nil {
		err = zw.Close()
	}
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil {
			size = st.Size()
		}
	}
	if err != nil {
		fail(err)
		return
	}
	j.mu.Lock()
	j.State, j.Size = "done", size
	j.mu.Unlock()
}

// exportEntry is a file of an export, in its manifest.
// Its keys are the Go names, as manifests have always had them.
type exportEntry struct {
	CallID, RecordingID, File, SHA256 string
}

// exportCall writes one call into an export: its recording, decrypted
// and verified (audited before it is written), and its JSON, or its vCon
// naming the recording by file and SHA-512.
func (s *Server) exportCall(ctx context.Context, zw *zip.Writer, j *exportJob, tenant string, c search.Result, req *request, manifest, docs *[]exportEntry) error {
	writeJSONFile := func(name string, v any) error {
		sum := sha256.New()
		f, err := zw.Create(name)
		if err == nil {
			err = json.NewEncoder(io.MultiWriter(f, sum)).Encode(v)
		}
		*docs = append(*docs, exportEntry{CallID: c.CallID, File: name, SHA256: hex.EncodeToString(sum.Sum(nil))})
		return err
	}
	if j.Format == "zip" {
		if err := writeJSONFile(c.CallID+".json", c); err != nil {
			return err
		}
	}
	rec := c.Recording
	var wav string
	var sum512 []byte
	if rec == nil || rec.Failure != "" || rec.ObjectKey == "" {
		j.mu.Lock()
		j.Without[c.CallID] = c.Status
		j.mu.Unlock()
	} else {
		// No audit, no recording.
		ev := event(req.r, "recording.export", &req.id, rec.RecordingID, nil)
		ev.Reason, ev.CallId = "export "+j.ID, c.CallID
		if err := s.cfg.Audit.Record(ctx, ev); err != nil {
			return fmt.Errorf("audit event not written, so nothing more is exported: %w", err)
		}
		wav = c.CallID + ".wav"
		zf, err := zw.CreateHeader(&zip.FileHeader{Name: wav, Method: zip.Store, Modified: rec.StoredAt})
		if err != nil {
			return err
		}
		s256, s512 := sha256.New(), sha512.New()
		if _, err := s.cfg.Playback.Decrypt(ctx, tenant, rec.KeyID, playback.Object{Key: rec.ObjectKey,
			CiphertextSHA256: rec.CiphertextSHA256, PlaintextSHA256: rec.PlaintextSHA256}, io.MultiWriter(zf, s256, s512)); err != nil {
			// A recording that does not verify is not handed out.
			return fmt.Errorf("call %s: %w", c.CallID, err)
		}
		sum512 = s512.Sum(nil)
		*manifest = append(*manifest, exportEntry{CallID: c.CallID, RecordingID: rec.RecordingID, File: wav, SHA256: hex.EncodeToString(s256.Sum(nil))})
		j.mu.Lock()
		j.Written++
		j.mu.Unlock()
	}
	if j.Format == "vcon" {
		return writeJSONFile(c.CallID+".vcon.json", vconOf(tenant, c, wav, sum512, j.CreatedAt))
	}
	return nil
}

// export finds the tenant's export id; another tenant's is not found.
// export is the export a request names, if it is the caller's (an
// administrator's: any of the tenant), and the caller may still export:
// an export holds the calls its creator could see, which others of the
// tenant may not.
func (s *Server) export(req *request) (*exportJob, error) {
	s.exports.mu.Lock()
	j := s.exports.jobs[req.target]
	s.exports.mu.Unlock()
	if j == nil || j.tenant != req.id.Tenant || j.creator != req.id.Subject && !req.id.Has(auth.RoleAdministrator) {
		return nil, notFound("export " + req.target)
	}
	g, err := s.grants(req.r.Context(), req.id)
	if err != nil {
		return nil, err
	}
	if !g.may(PermExport) {
		return nil, g.forbid(PermExport)
	}
	return j, nil
}

func (s *Server) getExport(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	j, err := s.export(req)
	if err != nil {
		return err
	}
	return writeJSON(w, j.snapshot())
}

func (s *Server) downloadExport(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	j, err := s.export(req)
	if err != nil {
		return err
	}
	j.mu.Lock()
	state := j.State
	j.mu.Unlock()
	if state != "done" {
		return &apiError{http.StatusConflict, "export_not_ready", "the export is " + state + ": download it once its state is done"}
	}
	f, err := os.Open(j.path)
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "verbatim-export-"+j.ID+".zip"))
	http.ServeContent(w, req.r, "", j.CreatedAt, f)
	return nil
}
