package api

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/verbatimrec/verbatim/projections/search"
)

// The portability export (GDPR Art. 20) writes each call as a vCon
// (IETF draft-ietf-vcon-vcon-core, version 0.4.0): its parties, the
// recording as a dialog whose content is the archive member it names
// (filename, content_hash), and its contact-centre metadata, comments,
// tags and scores as attachments. schemas/vcon/verbatim-vcon.schema.json
// is the JSON Schema of what Verbatim writes.

// VConVersion is the vCon syntax version the export writes.
const VConVersion = "0.4.0"

// VCon is one call as a vCon.
type VCon struct {
	Version     string       `json:"vcon"`
	UUID        string       `json:"uuid"`
	CreatedAt   string       `json:"created_at"`
	Subject     string       `json:"subject,omitempty"`
	Parties     []VConParty  `json:"parties"`
	Dialog      []VConDialog `json:"dialog"`
	Analysis    []any        `json:"analysis"`
	Attachments []VConAttach `json:"attachments"`
}

// VConParty is a participant: its number (tel URI) and SIP URI.
type VConParty struct {
	Tel  string `json:"tel,omitempty"`
	SIP  string `json:"sip,omitempty"`
	Name string `json:"name,omitempty"`
	Role string `json:"role,omitempty"`
}

// VConDialog is the call's recording, or, when it has none, an
// incomplete dialog with its disposition.
type VConDialog struct {
	Type        string  `json:"type"` // recording, incomplete
	Start       string  `json:"start"`
	Duration    float64 `json:"duration,omitempty"`
	Parties     []int   `json:"parties"`
	Originator  *int    `json:"originator,omitempty"`
	MediaType   string  `json:"mediatype,omitempty"`
	Filename    string  `json:"filename,omitempty"`
	ContentHash string  `json:"content_hash,omitempty"`
	Disposition string  `json:"disposition,omitempty"`
	SIPCallID   string  `json:"sip_call_id,omitempty"`
}

// VConAttach is one metadata event of the call.
type VConAttach struct {
	Purpose   string         `json:"purpose"`
	Start     string         `json:"start"`
	Dialog    int            `json:"dialog"`
	MediaType string         `json:"mediatype"`
	Encoding  string         `json:"encoding"`
	Body      map[string]any `json:"body"`
}

// vconTime is the draft's date-time: RFC 3339, UTC, milliseconds.
func vconTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// vconUUID is a call's vCon uuid: the same call always gets the same one
// (a version 8 UUID from the SHA-256 of tenant and call id).
func vconUUID(tenant, callID string) string {
	h := sha256.Sum256([]byte("verbatim-vcon\x00" + tenant + "\x00" + callID))
	h[6] = h[6]&0x0f | 0x80
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// ContentHash is the draft's content_hash of b's SHA-512 digest.
func ContentHash(sum512 []byte) string {
	return "sha512-" + base64.RawURLEncoding.EncodeToString(sum512)
}

// vconOf is call c as a vCon; wav and sum512 name its recording in the
// archive ("" if it has none).
func vconOf(tenant string, c search.Result, wav string, sum512 []byte, made time.Time) VCon {
	v := VCon{Version: VConVersion, UUID: vconUUID(tenant, c.CallID), CreatedAt: vconTime(made),
		Subject: "call " + c.CallID, Parties: []VConParty{}, Analysis: []any{}, Attachments: []VConAttach{}}
	all := make([]int, 0, len(c.Parties))
	var originator *int
	for i, p := range c.Parties {
		role := strings.ToLower(strings.TrimPrefix(p.Role, "PARTICIPANT_ROLE_")) // caller, callee, ...
		if role == "unspecified" {
			role = ""
		}
		vp := VConParty{Name: p.DisplayName, Role: role}
		if p.Number != "" {
			vp.Tel = p.Number
		}
		if strings.HasPrefix(p.URI, "sip:") || strings.HasPrefix(p.URI, "sips:") {
			vp.SIP = p.URI
		} else if p.URI != "" && vp.Tel == "" {
			vp.Tel = strings.TrimPrefix(p.URI, "tel:")
		}
		v.Parties = append(v.Parties, vp)
		all = append(all, i)
		if originator == nil && role == "caller" {
			originator = &i
		}
	}
	d := VConDialog{Start: vconTime(c.StartedAt), Duration: c.Duration.Seconds(), Parties: all, Originator: originator, SIPCallID: c.SIPCallID}
	switch {
	case wav != "":
		d.Type, d.MediaType, d.Filename, d.ContentHash = "recording", "audio/x-wav", wav, ContentHash(sum512)
		if c.Recording != nil && c.Recording.Duration > 0 {
			d.Duration = c.Recording.Duration.Seconds()
		}
	default:
		d.Type, d.Disposition, d.Originator = "incomplete", "failed", nil
		if c.Status == search.StatusNotAnswered {
			d.Disposition = "no-answer"
		}
	}
	v.Dialog = []VConDialog{d}
	for _, m := range c.Metadata {
		body := map[string]any{"source": m.Source}
		for k, val := range map[string]string{"agent_id": m.AgentID, "agent_name": m.AgentName, "skill_group": m.SkillGroup,
			"requested_service": m.RequestedService, "wrap_up_code": m.WrapUpCode, "ani": m.ANI, "dnis": m.DNIS} {
			if val != "" {
				body[k] = val
			}
		}
		if len(m.Variables) > 0 {
			body["variables"] = m.Variables
		}
		if len(m.Comments) > 0 {
			body["comments"] = m.Comments
		}
		if len(m.Tags) > 0 {
			body["tags"] = m.Tags
		}
		if len(m.Scores) > 0 {
			body["scores"] = m.Scores
		}
		v.Attachments = append(v.Attachments, VConAttach{Purpose: "verbatim-metadata", Start: vconTime(m.OccurredAt), Dialog: 0,
			MediaType: "application/json", Encoding: "json", Body: body})
	}
	return v
}
