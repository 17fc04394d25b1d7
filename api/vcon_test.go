package api

import (
	"crypto/sha512"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas/vcon"
)

// TestVConOf: a recorded call becomes a vCon whose parties carry their
// numbers and URIs, whose recording dialog names the WAV by file and
// SHA-512, and whose metadata, comments, tags and scores are
// attachments; a call with nothing recorded is an incomplete dialog. Both
// validate against the schema; documents that break it do not.
func TestVConOf(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
	c := search.Result{CallID: "c1", SIPCallID: "abc@pbx", StartedAt: t0, Duration: 42 * time.Second, Status: search.StatusRecorded,
		Parties:   []search.Party{{ID: "p1", Role: "PARTICIPANT_ROLE_CALLER", URI: "sip:carol@example.com", DisplayName: "Carol"}, {ID: "p2", Role: "PARTICIPANT_ROLE_CALLEE", Number: "+442079460000"}},
		Recording: &search.Recording{RecordingID: "r1", ObjectKey: "k", Duration: 41500 * time.Millisecond},
		Metadata: []search.Metadata{{OccurredAt: t0.Add(time.Minute), Source: "cti", AgentID: "a7", SkillGroup: "loans", Variables: map[string]string{"account": "123"}},
			{OccurredAt: t0.Add(2 * time.Minute), Source: "comment", Comments: []string{"asked for a call back"}, Tags: []string{"mifid"}, Scores: map[string]float64{"courtesy": 4}}}}
	sum := sha512.Sum512([]byte("RIFF...."))
	made := t0.Add(time.Hour)
	v := vconOf("demo", c, "c1.wav", sum[:], made)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := vcon.Validate(b); err != nil {
		t.Fatalf("%s\n%v", b, err)
	}
	d := v.Dialog[0]
	if d.Type != "recording" || d.Filename != "c1.wav" || d.ContentHash != ContentHash(sum[:]) || d.Duration != 41.5 || d.Start != "2026-11-30T09:15:00.000Z" ||
		d.Originator == nil || *d.Originator != 0 || len(d.Parties) != 2 {
		t.Fatalf("dialog: %+v", d)
	}
	if v.Parties[0].SIP != "sip:carol@example.com" || v.Parties[0].Name != "Carol" || v.Parties[0].Role != "caller" || v.Parties[1].Tel != "+442079460000" || v.Parties[1].Role != "callee" {
		t.Fatalf("parties: %+v", v.Parties)
	}
	if len(v.Attachments) != 2 || v.Attachments[0].Body["skill_group"] != "loans" || v.Attachments[1].Body["tags"].([]string)[0] != "mifid" {
		t.Fatalf("attachments: %+v", v.Attachments)
	}
	if again := vconOf("demo", c, "c1.wav", sum[:], made); again.UUID != v.UUID || vconOf("acme", c, "c1.wav", sum[:], made).UUID == v.UUID {
		t.Fatal("a call's vCon uuid is not stable per tenant and call")
	}

	c.Recording, c.Status, c.Metadata = nil, search.StatusNotAnswered, nil
	none := vconOf("demo", c, "", nil, made)
	b, _ = json.Marshal(none)
	if err := vcon.Validate(b); err != nil || none.Dialog[0].Type != "incomplete" || none.Dialog[0].Disposition != "no-answer" {
		t.Fatalf("%s\n%v", b, err)
	}

	good, _ := json.Marshal(v)
	for name, bad := range map[string]string{
		"no content hash":    strings.Replace(string(good), `"content_hash"`, `"x_content_hash"`, 1),
		"another version":    strings.Replace(string(good), `"vcon":"0.4.0"`, `"vcon":"0.0.1"`, 1),
		"a path as filename": strings.Replace(string(good), `"filename":"c1.wav"`, `"filename":"../c1.wav"`, 1),
		"a local time":       strings.Replace(string(good), `"start":"2026-11-30T09:15:00.000Z"`, `"start":"2026-11-30T10:15:00+01:00"`, 1),
	} {
		if bad == string(good) {
			t.Fatalf("%s: the mutation did not apply", name)
		}
		if vcon.Validate([]byte(bad)) == nil {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}
