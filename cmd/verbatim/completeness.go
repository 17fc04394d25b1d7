package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/verbatimrec/verbatim/projections/search"
)

// parseDay takes a day (2026-11-30, UTC) or an RFC 3339 time.
func parseDay(s string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

// runCompleteness is `verbatim completeness`: the proof of recording per
// party and day that a MiFID II supervisor asks for ("was every call of
// this trader recorded last month?").
func runCompleteness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("completeness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant")
	from := fs.String("from", "", "first day (2026-11-01, UTC) or time (RFC 3339); required")
	to := fs.String("to", "", "day after the last (2026-12-01), or time; required")
	party := fs.String("party", "", "only this party: phone number or SIP URI")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	check := fs.Bool("check", false, "exit with an error when any call signalled is not completely recorded")
	ch := addClickHouseFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return fmt.Errorf("completeness: --from and --to are required")
	}
	q := search.Query{Tenant: *tenant, Party: *party}
	var err error
	if q.From, err = parseDay(*from); err != nil {
		return fmt.Errorf("completeness: --from: %w", err)
	}
	if q.To, err = parseDay(*to); err != nil {
		return fmt.Errorf("completeness: --to: %w", err)
	}
	if !q.To.After(q.From) {
		return fmt.Errorf("completeness: --to (%s) must be after --from (%s)", *to, *from)
	}
	conn, db, err := ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := search.Report(ctx, conn, db, q)
	if err != nil {
		return err
	}
	notCompleteCalls := map[string]bool{} // a call of two parties is in two rows
	for _, r := range rows {
		for _, id := range r.NotComplete {
			notCompleteCalls[id] = true
		}
	}
	notComplete := len(notCompleteCalls)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []search.PartyDay{}
		}
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PARTY\tDAY\tSIGNALLED\tCOMPLETE\tPARTIAL\tNO AUDIO\tFAILED\tMISSING\tNOT ANSWERED\tIN PROGRESS\tREPROCESSED\tWHY NOT COMPLETE")
		for _, r := range rows {
			var why []string
			for _, k := range slices.Sorted(maps.Keys(r.Reasons)) {
				why = append(why, fmt.Sprintf("%d %s", r.Reasons[k], strings.ReplaceAll(k, "_", " ")))
			}
			for _, k := range slices.Sorted(maps.Keys(r.FailureReasons)) {
				why = append(why, fmt.Sprintf("%d failed: %s", r.FailureReasons[k], k))
			}
			if r.Unverified > 0 {
				why = append(why, fmt.Sprintf("%d stored before ledgers (unverified)", r.Unverified))
			}
			var was []string
			for _, k := range slices.Sorted(maps.Keys(r.Superseded)) {
				was = append(was, fmt.Sprintf("%d %s", r.Superseded[k], k))
			}
			reprocessed := "-"
			if r.Reprocessed > 0 {
				reprocessed = fmt.Sprintf("%d (superseded: %s)", r.Reprocessed, strings.Join(was, ", "))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Party, r.Day, r.Signalled, r.Complete, r.Partial, r.NoAudio,
				r.Failed, r.Missing, r.NotAnswered, r.InProgress, reprocessed, strings.Join(why, "; "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d party-days; %d calls not completely recorded\n", len(rows), notComplete)
	}
	if *check && notComplete > 0 {
		return fmt.Errorf("completeness: %d calls not completely recorded", notComplete)
	}
	return nil
}
