package api

import (
	"html/template"
	"net/http"
	"time"

	"github.com/verbatimrec/verbatim/projections/search"
)

// The right of access (GDPR Art. 15): for one data subject, named by a
// phone number or SIP URI, a human-readable report of every call of the
// tenant they took part in (as a party, or as the ANI or DNIS of the
// call's contact-centre data): its parties, times, recordings with their
// completeness, and its metadata and comments. Printable to PDF from the
// browser. For administrators; audited as subject.report with the party.

// maxReportCalls bounds one report.
const maxReportCalls = 10000

var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Calls of {{.Party}}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#1a202c}table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border:1px solid #cbd5e0;padding:.25rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}h2{font-size:1rem;margin-top:2rem}
@media print{h2{page-break-before:auto}}</style></head><body>
<h1>Calls of {{.Party}}</h1>
<p>Tenant {{.Tenant}}. Report made {{.Made}} for {{.By}} (right of access, GDPR Art. 15). {{len .Calls}} calls{{if .Truncated}} (the first {{len .Calls}}: narrow the request){{end}}.</p>
{{range .Calls}}<h2 class="call">Call {{.CallID}}</h2>
<table><tr><th>Started (UTC)</th><td>{{.StartedAt.UTC.Format "2006-01-02 15:04:05"}}</td><th>Duration</th><td>{{printf "%.1f" .Duration.Seconds}} s</td></tr>
<tr><th>SIP Call-ID</th><td>{{.SIPCallID}}</td><th>Ended</th><td>{{.EndReason}}</td></tr>
<tr><th>Recording</th><td colspan="3">{{.Status}}{{with .Recording}}{{with .Completeness}} ({{.Status}}){{end}}, stored {{.StoredAt.UTC.Format "2006-01-02 15:04:05"}}{{end}}</td></tr></table>
<table><tr><th>Party</th><th>Role</th><th>Name</th><th>Number or URI</th></tr>
{{range .Parties}}<tr><td>{{.ID}}</td><td>{{.Role}}</td><td>{{.DisplayName}}</td><td>{{.Number}} {{.URI}}</td></tr>{{end}}</table>
{{if .Metadata}}<table><tr><th>When (UTC)</th><th>Source</th><th>Agent</th><th>Skill group</th><th>Wrap-up</th><th>Comments, tags, scores</th></tr>
{{range .Metadata}}<tr><td>{{.OccurredAt.UTC.Format "2006-01-02 15:04:05"}}</td><td>{{.Source}}</td><td>{{.AgentName}} {{.AgentID}}</td><td>{{.SkillGroup}}</td><td>{{.WrapUpCode}}</td>
<td>{{range .Comments}}<p>{{.}}</p>{{end}}{{range .Tags}}#{{.}} {{end}}{{range $k, $v := .Scores}}{{$k}}: {{$v}}; {{end}}</td></tr>{{end}}</table>{{end}}
{{end}}</body></html>
`))

// subjectReport is GET /v1/subjects/report?party=NUMBER-OR-URI.
func (s *Server) subjectReport(w http.ResponseWriter, req *request) error {
	p, err := query(req.r, "party")
	if err != nil {
		return err
	}
	party := p["party"]
	if party == "" || len(party) > 256 {
		return badRequest("party: the subject's phone number or SIP URI (1 to 256 bytes)")
	}
	req.target = party
	q := search.Query{Tenant: req.id.Tenant, Party: party, Limit: search.MaxLimit, History: true}
	var calls []search.Result
	truncated := false
	for {
		rs, next, err := search.SearchPage(req.r.Context(), s.cfg.Conn, s.cfg.Database, q)
		if err != nil {
			return err
		}
		calls = append(calls, rs...)
		if next == "" {
			break
		}
		if len(calls) >= maxReportCalls {
			truncated = true
			break
		}
		q.After = next
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	by := req.id.Email
	if by == "" {
		by = req.id.Subject
	}
	return reportPage.Execute(w, map[string]any{"Party": party, "Tenant": req.id.Tenant, "Calls": calls, "Truncated": truncated,
		"Made": time.Now().UTC().Format(time.RFC3339), "By": by})
}
