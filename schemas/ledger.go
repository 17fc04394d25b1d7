package schemas

import (
	"fmt"
	"strings"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// The one definition of a recording's completeness, from its ledgers
// (RecordingStored.ledgers): the processor checks a ledger with
// CheckLedger before it announces a recording, and the projection and the
// CLI label it with Summarize. A label is derived from an identity that
// must balance, never from a count alone.

// ledgerLine is one named line of a StreamLedger.
type ledgerLine struct {
	name  string // snake_case, stable: JSON and CLI use it
	count uint64
	loss  bool // audio captured that is not in the recording
}

func lines(l *verbatimv1.StreamLedger) []ledgerLine {
	return []ledgerLine{
		{"recorded", l.GetRecorded(), false},
		{"events", l.GetEvents(), false},
		{"comfort_noise", l.GetComfortNoise(), false},
		{"duplicate", l.GetDuplicate(), false},
		{"stray", l.GetStray(), false},
		{"late", l.GetLate(), true},
		{"not_decodable", l.GetNotDecodable(), true},
		{"encrypted_no_keys", l.GetEncryptedNoKeys(), true},
		{"srtp_auth_failed", l.GetSrtpAuthFailed(), true},
		{"srtp_replayed", l.GetSrtpReplayed(), true},
		{"lost_in_transit", l.GetLostInTransit(), true},
	}
}

// CheckLedger returns an error unless the ledger's lines add up to the
// packets it says were captured: every packet is in the recording or under
// exactly one named reason.
func CheckLedger(l *verbatimv1.StreamLedger) error {
	var sum uint64
	var parts []string
	for _, ln := range lines(l) {
		sum += ln.count
		if ln.count > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", ln.name, ln.count))
		}
	}
	if sum != l.GetCaptured() {
		return fmt.Errorf("ledger of stream %s does not balance: %d packets captured, but %d accounted for (%s)",
			l.GetStreamId(), l.GetCaptured(), sum, strings.Join(parts, ", "))
	}
	return nil
}

// Completeness is what a recording's ledgers say about it, over all its
// streams.
type Completeness struct {
	// Status is StatusComplete, StatusPartial or StatusNoAudio.
	Status string `json:"status"`
	// AudioExpected counts the audio packets the recording should hold:
	// those captured (less copies) and those known missing though never
	// captured. AudioRecorded of them are in it.
	AudioExpected uint64 `json:"audio_expected"`
	AudioRecorded uint64 `json:"audio_recorded"`
	// Missing counts, by reason (snake_case ledger line), the audio
	// packets not in the recording; "never_captured" counts sequence
	// numbers that never arrived.
	Missing map[string]uint64 `json:"missing,omitempty"`
	// CaptureDamaged says what a damaged capture lost while the call was
	// open, if it did.
	CaptureDamaged string `json:"capture_damaged,omitempty"`
}

// Completeness statuses.
const (
	// StatusComplete: every audio packet captured is in the recording, none
	// is known missing, and the ledgers balance.
	StatusComplete = "complete"
	// StatusPartial: some audio is not in the recording; Missing says why.
	StatusPartial = "partial"
	// StatusNoAudio: no audio packet was captured on any stream.
	StatusNoAudio = "no audio"
)

// The other statuses a recording event has, beside its completeness: a
// RecordingFailed, and a RecordingStored from before ledgers existed,
// whose completeness nothing proved.
const (
	StatusFailed     = "failed"
	StatusUnverified = "unverified"
)

// RecordingStatuses are every status a recording event can have, what
// reprocessing, search and the API select by.
var RecordingStatuses = []string{StatusComplete, StatusPartial, StatusNoAudio, StatusFailed, StatusUnverified} //nolint:gochecknoglobals // a constant list

// Summarize derives a recording's completeness from its ledgers. A ledger
// that does not balance makes the recording partial: what it does not
// account for is counted as "unaccounted".
func Summarize(ls []*verbatimv1.StreamLedger) Completeness {
	c := Completeness{Missing: map[string]uint64{}}
	for _, l := range ls {
		var sum uint64
		for _, ln := range lines(l) {
			sum += ln.count
			if ln.loss && ln.count > 0 {
				c.Missing[ln.name] += ln.count
			}
		}
		if sum != l.GetCaptured() { // CheckLedger fails: the difference is unexplained
			c.Missing["unaccounted"] += max(sum, l.GetCaptured()) - min(sum, l.GetCaptured())
		}
		audio := l.GetCaptured() - min(l.GetCaptured(), l.GetEvents()+l.GetComfortNoise()+l.GetDuplicate()+l.GetStray())
		c.AudioExpected += audio + l.GetNeverCaptured()
		c.AudioRecorded += l.GetRecorded()
		if n := l.GetNeverCaptured(); n > 0 {
			c.Missing["never_captured"] += n
		}
		if d := l.GetCaptureDamaged(); d != "" && c.CaptureDamaged == "" {
			c.CaptureDamaged = d
		}
	}
	switch {
	case c.AudioExpected == 0 && c.CaptureDamaged == "":
		c.Status = StatusNoAudio
	case len(c.Missing) == 0 && c.CaptureDamaged == "" && c.AudioRecorded > 0 && c.AudioRecorded == c.AudioExpected:
		c.Status = StatusComplete
	default:
		c.Status = StatusPartial
	}
	if len(c.Missing) == 0 {
		c.Missing = nil
	}
	return c
}

// String is the label search prints: "complete, 425 audio packets",
// "partial: 0 of 246 audio packets recorded (246 not decodable)",
// "no audio captured".
func (c Completeness) String() string {
	switch c.Status {
	case StatusComplete:
		return fmt.Sprintf("complete, %d audio packets", c.AudioRecorded)
	case StatusNoAudio:
		return "no audio captured"
	}
	var why []string
	for _, ln := range []string{"not_decodable", "encrypted_no_keys", "srtp_auth_failed", "srtp_replayed", "late",
		"lost_in_transit", "never_captured", "unaccounted"} {
		if n := c.Missing[ln]; n > 0 {
			why = append(why, fmt.Sprintf("%d %s", n, strings.ReplaceAll(ln, "_", " ")))
		}
	}
	if c.CaptureDamaged != "" {
		why = append(why, c.CaptureDamaged)
	}
	return fmt.Sprintf("partial: %d of %d audio packets recorded (%s)", c.AudioRecorded, c.AudioExpected, strings.Join(why, "; "))
}
