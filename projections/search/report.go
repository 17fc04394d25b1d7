package search

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/verbatimrec/verbatim/schemas"
)

// PartyDay is the proof of recording for one party on one (UTC) day: of
// the calls signalled with the party in them, how many were recorded
// completely, partly, not at all. Signalled = Complete + Partial + NoAudio
// + Failed + Missing + NotAnswered + InProgress: every call signalled is
// in exactly one of them.
type PartyDay struct {
	Party       string `json:"party"` // number, or SIP URI when it has none
	Day         string `json:"day"`   // YYYY-MM-DD, UTC
	Signalled   int    `json:"signalled"`
	Complete    int    `json:"complete"`
	Partial     int    `json:"partial"`
	NoAudio     int    `json:"no_audio"`
	Failed      int    `json:"failed"`
	Missing     int    `json:"missing"`
	NotAnswered int    `json:"not_answered"`
	InProgress  int    `json:"in_progress"`
	// Unverified counts recordings stored before ledgers existed, whose
	// completeness nothing proved (counted in Partial).
	Unverified int `json:"unverified,omitempty"`
	// Reasons sums, over the partial recordings, the audio packets
	// missing by reason (ledger lines), and FailureReasons the failed
	// calls by reason.
	Reasons        map[string]uint64 `json:"reasons,omitempty"`
	FailureReasons map[string]int    `json:"failure_reasons,omitempty"`
	// Calls are the ids of the calls that are not complete, for follow-up.
	NotComplete []string `json:"not_complete,omitempty"`
	// Reprocessed counts the calls whose current recording was made again
	// from their raw media (verbatim reprocess), and Superseded, by
	// status, the recordings those replaced: a "partial" that became
	// "complete" shows in both, so the change is on the record.
	Reprocessed int            `json:"reprocessed,omitempty"`
	Superseded  map[string]int `json:"superseded,omitempty"`
}

// MaxReportCalls bounds the calls one report reads; a range holding more
// is refused with an error asking for a narrower one.
const MaxReportCalls = 100000

// Report returns, per party and day, what was recorded of the calls q
// selects (tenant, time range, party). q.Limit is ignored.
func Report(ctx context.Context, conn driver.Conn, db string, q Query) ([]PartyDay, error) {
	q.Limit, q.History, q.After = MaxLimit, true, ""
	var calls []Result
	for {
		page, next, err := search(ctx, conn, db, q)
		if err != nil {
			return nil, err
		}
		calls = append(calls, page...)
		if len(calls) > MaxReportCalls {
			return nil, fmt.Errorf("search: more than %d calls in the range: ask for a shorter one", MaxReportCalls)
		}
		if next == "" {
			break
		}
		q.After = next
	}
	rows := map[[2]string]*PartyDay{}
	for _, c := range calls {
		day := c.StartedAt.UTC().Format("2006-01-02")
		parties := map[string]bool{}
		for _, p := range c.Parties {
			name := p.Number
			if name == "" {
				name = p.URI
			}
			if name == "" {
				name = "(unknown)"
			}
			if q.Party == "" || p.Number == q.Party || p.URI == q.Party {
				parties[name] = true
			}
		}
		switch {
		case len(parties) == 0 && q.Party != "":
			parties[q.Party] = true // found by the ANI or DNIS of its metadata
		case len(parties) == 0:
			parties["(unknown: identities unreadable)"] = true
		}
		for party := range parties {
			k := [2]string{party, day}
			r := rows[k]
			if r == nil {
				r = &PartyDay{Party: party, Day: day}
				rows[k] = r
			}
			r.add(c)
		}
	}
	out := make([]PartyDay, 0, len(rows))
	for _, k := range slices.SortedFunc(maps.Keys(rows), func(a, b [2]string) int {
		return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1])
	}) {
		out = append(out, *rows[k])
	}
	return out, nil
}

// RecordingStatus is a recording's status in a report: its completeness
// status, "failed", or "unverified" (stored before ledgers).
func RecordingStatus(rec Recording) string {
	switch {
	case rec.Failure != "":
		return schemas.StatusFailed
	case rec.Completeness == nil:
		return schemas.StatusUnverified
	}
	return rec.Completeness.Status
}

func (r *PartyDay) add(c Result) {
	r.Signalled++
	if c.Recording != nil && c.Recording.Generation > 0 {
		r.Reprocessed++
	}
	for _, h := range c.History {
		if r.Superseded == nil {
			r.Superseded = map[string]int{}
		}
		r.Superseded[RecordingStatus(h)]++
	}
	complete := false
	switch c.Status {
	case StatusFailed:
		r.Failed++
		if r.FailureReasons == nil {
			r.FailureReasons = map[string]int{}
		}
		r.FailureReasons[c.Recording.Failure]++
	case StatusMissing:
		r.Missing++
	case StatusNotAnswered:
		r.NotAnswered++
		complete = true // nothing to record
	case StatusInProgress:
		r.InProgress++
	case StatusRecorded:
		cs := c.Recording.Completeness
		switch {
		case cs == nil:
			r.Partial++
			r.Unverified++
		case cs.Status == schemas.StatusComplete:
			r.Complete++
			complete = true
		case cs.Status == schemas.StatusNoAudio:
			r.NoAudio++
		default:
			r.Partial++
			if r.Reasons == nil {
				r.Reasons = map[string]uint64{}
			}
			for reason, n := range cs.Missing {
				r.Reasons[reason] += n
			}
			if cs.CaptureDamaged != "" {
				r.Reasons["capture_damaged"]++
			}
		}
	}
	if !complete {
		r.NotComplete = append(r.NotComplete, c.CallID)
	}
}
