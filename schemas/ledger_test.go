package schemas_test

import (
	"testing"

	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func TestLedgerLabels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ledgers []*verbatimv1.StreamLedger
		status  string
		label   string
		balance bool
	}{
		{"every audio packet recorded; events, noise and a copy on lines of their own",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 430, Recorded: 420, Events: 6, ComfortNoise: 3, Duplicate: 1}, {StreamId: "b"}},
			schemas.StatusComplete, "complete, 420 audio packets", true},
		// SIPp's uac_pcap sends PCMA the answer did not list: captured,
		// none in the recording. Never complete.
		{"audio captured, none recorded",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 246, NotDecodable: 246}},
			schemas.StatusPartial, "partial: 0 of 246 audio packets recorded (246 not decodable)", true},
		{"sequence gaps: known missing though never captured",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 422, Recorded: 422, NeverCaptured: 3}},
			schemas.StatusPartial, "partial: 422 of 425 audio packets recorded (3 never captured)", true},
		{"a capture that ended early",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 421, Recorded: 421, CaptureDamaged: "capture ended early at frame 900"}},
			schemas.StatusPartial, "partial: 421 of 421 audio packets recorded (capture ended early at frame 900)", true},
		{"a ledger that does not balance is never complete",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 425, Recorded: 420}},
			schemas.StatusPartial, "partial: 420 of 425 audio packets recorded (5 unaccounted)", false},
		{"no audio at all",
			[]*verbatimv1.StreamLedger{{StreamId: "a", Captured: 4, Events: 4}, {StreamId: "b"}},
			schemas.StatusNoAudio, "no audio captured", true},
	} {
		c := schemas.Summarize(tc.ledgers)
		if c.Status != tc.status || c.String() != tc.label {
			t.Errorf("%s: %s (%q), want %s (%q)", tc.name, c.Status, c, tc.status, tc.label)
		}
		balanced := true
		for _, l := range tc.ledgers {
			if schemas.CheckLedger(l) != nil {
				balanced = false
			}
		}
		if balanced != tc.balance {
			t.Errorf("%s: balanced %v, want %v", tc.name, balanced, tc.balance)
		}
	}
}
