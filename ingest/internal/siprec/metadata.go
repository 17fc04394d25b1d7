// Package siprec reads what a SIPREC Session Recording Client (an SBC or
// PBX forking calls to Verbatim, RFC 7866) sends: the multipart/mixed body
// of its INVITE, holding the SDP of the streams to record and the RFC 7865
// recording metadata (application/rs-metadata+xml) that says who the
// participants are and which streams each sends and receives.
//
// Everything here is attacker-controlled input from the network: sizes are
// bounded, document type declarations (and with them entity expansion) are
// refused, and a document that does not parse or names streams or
// participants it does not define is refused whole, never partly trusted.
package siprec

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Bounds on what one metadata document may hold.
const (
	// MaxMetadataBytes bounds a metadata document.
	MaxMetadataBytes = 64 << 10
	// MaxItems bounds the sessions, participants, streams and associations
	// of one document, each.
	MaxItems = 256
	// MaxExtensions bounds the vendor extension values kept.
	MaxExtensions = 128
	// maxExtensionValue bounds one extension value, in bytes.
	maxExtensionValue = 1024
)

// ErrBadMetadata is wrapped by every error ParseMetadata returns for a
// document it refuses (an SRS answers 400 with the reason).
var ErrBadMetadata = errors.New("siprec: bad recording metadata")

// Metadata is one RFC 7865 document. Times are zero when absent.
type Metadata struct {
	// DataMode is "complete" (a full snapshot) or "partial" (changes to
	// the snapshot before it).
	DataMode     string
	Groups       []Group
	Sessions     []Session
	Participants []Participant
	Streams      []Stream
	// ParticipantSessions say when a participant joined and left a
	// communication session; ParticipantStreams which streams it sends
	// and receives.
	ParticipantSessions []ParticipantSession
	ParticipantStreams  []ParticipantStreams
	SessionRecordings   []SessionRecording
	// Extensions are the vendor and standard extension elements (Cisco,
	// Oracle, Avaya UCID, BroadWorks callData, call-center...), flattened
	// to "element.child" -> text, in document order of their keys: kept as
	// call variables, never dropped.
	Extensions map[string]string
}

// Group is a <group>: communication sessions recorded together.
type Group struct {
	ID            string
	AssociateTime time.Time
}

// Session is a communication session of the recording.
type Session struct {
	ID            string
	SIPSessionIDs []string
	GroupRef      string
	Start, Stop   time.Time
}

// Participant is one party of the communication sessions.
type Participant struct {
	ID    string
	Names []NameID
}

// NameID is one identity of a participant: an address of record and an
// optional display name.
type NameID struct {
	AoR  string
	Name string
	Lang string
}

// Stream is one recorded media stream; Label ties it to the a=label of an
// m-line of the SDP.
type Stream struct {
	ID, SessionID, Label    string
	Associate, Disassociate time.Time
}

// ParticipantSession is a participant's time in a communication session.
type ParticipantSession struct {
	ParticipantID, SessionID string
	Associate, Disassociate  time.Time
}

// ParticipantStreams are the streams a participant sends and receives.
type ParticipantStreams struct {
	ParticipantID string
	Send, Recv    []string
}

// SessionRecording is a communication session's time in the recording.
type SessionRecording struct {
	SessionID               string
	Associate, Disassociate time.Time
}

// The XML shapes. Element names carry no namespace: SRCs use the RFC's
// urn:ietf:params:xml:ns:recording:1, a prefix, or (Sonus) the urn without
// ":1", and all of them must be read.
type (
	xmlDoc struct {
		DataMode     string           `xml:"datamode"`
		DataModeAlt  string           `xml:"dataMode"` // Avaya SBCE
		Groups       []xmlGroup       `xml:"group"`
		Sessions     []xmlSession     `xml:"session"`
		Participants []xmlParticipant `xml:"participant"`
		Streams      []xmlStream      `xml:"stream"`
		PSessions    []xmlPSession    `xml:"participantsessionassoc"`
		PStreams     []xmlPStreams    `xml:"participantstreamassoc"`
		SRecordings  []xmlSRecording  `xml:"sessionrecordingassoc"`
		Any          []xmlAny         `xml:",any"`
	}
	xmlGroup struct {
		ID        string   `xml:"group_id,attr"`
		OldID     string   `xml:"id,attr"` // earlier drafts (Acme Packet)
		Associate string   `xml:"associate-time"`
		Any       []xmlAny `xml:",any"`
	}
	xmlSession struct {
		ID       string   `xml:"session_id,attr"`
		OldID    string   `xml:"id,attr"`
		SIPIDs   []string `xml:"sipSessionID"`
		GroupRef string   `xml:"group-ref"`
		Start    string   `xml:"start-time"`
		Stop     string   `xml:"stop-time"`
		Any      []xmlAny `xml:",any"`
	}
	xmlParticipant struct {
		ID    string      `xml:"participant_id,attr"`
		OldID string      `xml:"id,attr"`
		Names []xmlNameID `xml:"nameID"`
		Any   []xmlAny    `xml:",any"`
	}
	xmlNameID struct {
		AoR  string `xml:"aor,attr"`
		Name struct {
			Lang string `xml:"lang,attr"`
			Text string `xml:",chardata"`
		} `xml:"name"`
	}
	xmlStream struct {
		ID           string `xml:"stream_id,attr"`
		OldID        string `xml:"id,attr"`
		SessionID    string `xml:"session_id,attr"`
		Label        string `xml:"label"`
		Associate    string `xml:"associate-time"`
		Disassociate string `xml:"disassociate-time"`
	}
	xmlPSession struct {
		ParticipantID string `xml:"participant_id,attr"`
		SessionID     string `xml:"session_id,attr"`
		Associate     string `xml:"associate-time"`
		Disassociate  string `xml:"disassociate-time"`
	}
	xmlPStreams struct {
		ParticipantID string   `xml:"participant_id,attr"`
		Send          []string `xml:"send"`
		Recv          []string `xml:"recv"`
	}
	xmlSRecording struct {
		SessionID    string `xml:"session_id,attr"`
		Associate    string `xml:"associate-time"`
		Disassociate string `xml:"disassociate-time"`
	}
	// xmlAny is an element the schema does not name: an extension.
	xmlAny struct {
		XMLName  xml.Name
		Text     string   `xml:",chardata"`
		Children []xmlAny `xml:",any"`
	}
)

// ParseMetadata reads one metadata document. It refuses, with an error
// wrapping ErrBadMetadata: a document over MaxMetadataBytes, one with a
// document type declaration (no DTDs, so no entity expansion), one that is
// not well-formed, one whose root is not <recording>, a datamode other
// than complete or partial, more than MaxItems of anything, a time that is
// not RFC 3339, and (in a complete document) an association naming a
// stream, participant or session the document does not define.
func ParseMetadata(b []byte) (*Metadata, error) {
	if len(b) > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadMetadata, len(b), MaxMetadataBytes)
	}
	if err := checkTokens(b); err != nil {
		return nil, err
	}
	var doc xmlDoc
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMetadata, err)
	}
	m := &Metadata{DataMode: strings.TrimSpace(cmp.Or(doc.DataMode, doc.DataModeAlt)), Extensions: map[string]string{}}
	switch m.DataMode {
	case "complete", "partial":
	case "":
		m.DataMode = "complete" // RFC 7865 6.1: complete unless said otherwise
	default:
		return nil, fmt.Errorf("%w: datamode %q (complete or partial)", ErrBadMetadata, m.DataMode)
	}
	if n := max(len(doc.Groups), len(doc.Sessions), len(doc.Participants), len(doc.Streams), len(doc.PSessions),
		len(doc.PStreams), len(doc.SRecordings)); n > MaxItems {
		return nil, fmt.Errorf("%w: %d items of one kind, more than %d", ErrBadMetadata, n, MaxItems)
	}
	var terr error
	ts := func(what, s string) time.Time {
		s = strings.TrimSpace(s)
		if s == "" || terr != nil {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			// xs:dateTime may omit the zone (Acme Packet, BroadWorks
			// do): taken as UTC.
			t, err = time.Parse("2006-01-02T15:04:05.999999999", s)
		}
		if err != nil {
			terr = fmt.Errorf("%w: %s %q is not an RFC 3339 time", ErrBadMetadata, what, s)
		}
		return t
	}
	for _, g := range doc.Groups {
		m.Groups = append(m.Groups, Group{ID: cmp.Or(g.ID, g.OldID), AssociateTime: ts("group associate-time", g.Associate)})
		m.extensions(g.Any)
	}
	for _, s := range doc.Sessions {
		ids := make([]string, 0, len(s.SIPIDs))
		for _, id := range s.SIPIDs {
			ids = append(ids, strings.TrimSpace(id))
		}
		m.Sessions = append(m.Sessions, Session{ID: cmp.Or(s.ID, s.OldID), SIPSessionIDs: ids, GroupRef: strings.TrimSpace(s.GroupRef),
			Start: ts("session start-time", s.Start), Stop: ts("session stop-time", s.Stop)})
		m.extensions(s.Any)
	}
	for _, p := range doc.Participants {
		pt := Participant{ID: cmp.Or(p.ID, p.OldID)}
		for _, n := range p.Names {
			pt.Names = append(pt.Names, NameID{AoR: strings.TrimSpace(n.AoR), Name: strings.TrimSpace(n.Name.Text), Lang: n.Name.Lang})
		}
		m.Participants = append(m.Participants, pt)
		m.extensions(p.Any)
	}
	for _, s := range doc.Streams {
		m.Streams = append(m.Streams, Stream{ID: cmp.Or(s.ID, s.OldID), SessionID: s.SessionID, Label: strings.TrimSpace(s.Label),
			Associate: ts("stream associate-time", s.Associate), Disassociate: ts("stream disassociate-time", s.Disassociate)})
	}
	for _, a := range doc.PSessions {
		m.ParticipantSessions = append(m.ParticipantSessions, ParticipantSession{ParticipantID: a.ParticipantID, SessionID: a.SessionID,
			Associate: ts("participantsessionassoc associate-time", a.Associate), Disassociate: ts("participantsessionassoc disassociate-time", a.Disassociate)})
	}
	for _, a := range doc.PStreams {
		ps := ParticipantStreams{ParticipantID: a.ParticipantID}
		for _, s := range a.Send {
			ps.Send = append(ps.Send, strings.TrimSpace(s))
		}
		for _, s := range a.Recv {
			ps.Recv = append(ps.Recv, strings.TrimSpace(s))
		}
		m.ParticipantStreams = append(m.ParticipantStreams, ps)
	}
	for _, a := range doc.SRecordings {
		m.SessionRecordings = append(m.SessionRecordings, SessionRecording{SessionID: a.SessionID,
			Associate: ts("sessionrecordingassoc associate-time", a.Associate), Disassociate: ts("sessionrecordingassoc disassociate-time", a.Disassociate)})
	}
	m.extensions(doc.Any)
	if terr != nil {
		return nil, terr
	}
	if m.DataMode == "complete" {
		if err := m.checkReferences(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// checkTokens refuses a document type declaration (and with it any entity
// definition) and any root but <recording>.
func checkTokens(b []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	root := true
	for {
		tok, err := dec.RawToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadMetadata, err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return fmt.Errorf("%w: a document type declaration (<!%s...>): DTDs and entities are not accepted", ErrBadMetadata, firstWord(t))
		case xml.StartElement:
			if root && t.Name.Local != "recording" {
				return fmt.Errorf("%w: root element <%s>, not <recording>", ErrBadMetadata, t.Name.Local)
			}
			if root {
				return nil // the rest is read by Decode
			}
		}
	}
}

func firstWord(d xml.Directive) string {
	s := string(d)
	if i := strings.IndexAny(s, " \t\r\n["); i >= 0 {
		s = s[:i]
	}
	return s[:min(len(s), 16)]
}

// checkReferences refuses associations that name what the document does
// not define: streams sent or received, participants, sessions.
func (m *Metadata) checkReferences() error {
	streams, parts, sessions := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range m.Streams {
		streams[s.ID] = true
	}
	for _, p := range m.Participants {
		parts[p.ID] = true
	}
	for _, s := range m.Sessions {
		sessions[s.ID] = true
	}
	for _, a := range m.ParticipantStreams {
		if !parts[a.ParticipantID] {
			return fmt.Errorf("%w: participantstreamassoc names participant %q, which the document does not define", ErrBadMetadata, a.ParticipantID)
		}
		for _, id := range slices.Concat(a.Send, a.Recv) {
			if !streams[id] {
				return fmt.Errorf("%w: participant %q sends or receives stream %q, which the document does not define", ErrBadMetadata, a.ParticipantID, id)
			}
		}
	}
	for _, a := range m.ParticipantSessions {
		if !parts[a.ParticipantID] {
			return fmt.Errorf("%w: participantsessionassoc names participant %q, which the document does not define", ErrBadMetadata, a.ParticipantID)
		}
	}
	for _, s := range m.Streams {
		if s.SessionID != "" && len(m.Sessions) > 0 && !sessions[s.SessionID] {
			return fmt.Errorf("%w: stream %q belongs to session %q, which the document does not define", ErrBadMetadata, s.ID, s.SessionID)
		}
	}
	return nil
}

// extensions flattens extension elements into m.Extensions, bounded.
func (m *Metadata) extensions(els []xmlAny) {
	for _, e := range els {
		m.flatten(e.XMLName.Local, e)
	}
}

func (m *Metadata) flatten(key string, e xmlAny) {
	if len(e.Children) == 0 {
		if len(m.Extensions) >= MaxExtensions {
			return
		}
		v := strings.TrimSpace(e.Text)
		if len(v) > maxExtensionValue {
			v = v[:maxExtensionValue]
		}
		if _, dup := m.Extensions[key]; dup {
			for i := 2; ; i++ {
				if k := fmt.Sprintf("%s#%d", key, i); !hasKey(m.Extensions, k) {
					key = k
					break
				}
			}
		}
		m.Extensions[key] = v
		return
	}
	for _, c := range e.Children {
		m.flatten(key+"."+c.XMLName.Local, c)
	}
}

// Participant returns the participant with id, if defined.
func (m *Metadata) Participant(id string) (Participant, bool) {
	i := slices.IndexFunc(m.Participants, func(p Participant) bool { return p.ID == id })
	if i < 0 {
		return Participant{}, false
	}
	return m.Participants[i], true
}

// Sender returns the participant that sends stream id, if one is said to.
func (m *Metadata) Sender(streamID string) (Participant, bool) {
	for _, a := range m.ParticipantStreams {
		if slices.Contains(a.Send, streamID) {
			return m.Participant(a.ParticipantID)
		}
	}
	return Participant{}, false
}

// StreamByLabel returns the stream whose label is label (an SDP a=label).
func (m *Metadata) StreamByLabel(label string) (Stream, bool) {
	i := slices.IndexFunc(m.Streams, func(s Stream) bool { return s.Label == label })
	if i < 0 {
		return Stream{}, false
	}
	return m.Streams[i], true
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// Merge applies a metadata update to the snapshot before it: a "partial"
// document (RFC 7865 6.1) adds to and replaces, by id, the participants,
// streams, sessions and associations of prev; a complete one replaces it.
func Merge(prev, next *Metadata) *Metadata {
	if prev == nil || next == nil || next.DataMode != "partial" {
		if next == nil {
			return prev
		}
		return next
	}
	m := *prev
	m.Participants = mergeBy(prev.Participants, next.Participants, func(p Participant) string { return p.ID })
	m.Streams = mergeBy(prev.Streams, next.Streams, func(s Stream) string { return s.ID })
	m.Sessions = mergeBy(prev.Sessions, next.Sessions, func(s Session) string { return s.ID })
	m.ParticipantStreams = mergeBy(prev.ParticipantStreams, next.ParticipantStreams, func(p ParticipantStreams) string { return p.ParticipantID })
	m.ParticipantSessions = mergeBy(prev.ParticipantSessions, next.ParticipantSessions, func(p ParticipantSession) string { return p.ParticipantID + "\x00" + p.SessionID })
	if len(next.Extensions) > 0 {
		m.Extensions = make(map[string]string, len(prev.Extensions)+len(next.Extensions))
		for k, v := range prev.Extensions {
			m.Extensions[k] = v
		}
		for k, v := range next.Extensions {
			m.Extensions[k] = v
		}
	}
	return &m
}

func mergeBy[T any](prev, next []T, id func(T) string) []T {
	out := slices.Clone(prev)
	for _, n := range next {
		if i := slices.IndexFunc(out, func(o T) bool { return id(o) == id(n) }); i >= 0 {
			out[i] = n
		} else if len(out) < MaxItems {
			out = append(out, n)
		}
	}
	return out
}
