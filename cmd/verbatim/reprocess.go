package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/verbatimrec/verbatim/processors"
	"github.com/verbatimrec/verbatim/schemas"
)

// runReprocess is `verbatim reprocess`: record calls again from their raw
// media with this build (a decoder it has that the recording's build had
// not, a fix), each new recording superseding the old one.
func runReprocess(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reprocess", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	job := fs.String("job", "", "name of the job (required): its consumer group and transactional id are verbatim-reprocess-JOB; run it again to resume it")
	tenant := fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant whose calls are redone")
	from := fs.String("from", "", "calls started at or after this day (2026-11-01, UTC) or time (RFC 3339)")
	to := fs.String("to", "", "calls started before this day or time")
	callIDs := fs.String("call-id", "", "only these calls (Verbatim call ids), comma separated")
	codecs := fs.String("codec", "", "only calls with a stream offering one of these codecs (G729, opus...), comma separated")
	statuses := fs.String("status", "", "only calls whose current recording is: complete, partial, \"no audio\", failed or unverified; comma separated")
	failure := fs.String("failure", "", "only calls whose recording failed with a reason containing this")
	reason := fs.String("reason", "", "why, in your words: added to each new recording's reason (a ticket)")
	force := fs.Bool("force", false, "redo the selected calls even when this build would record nothing differently (needs --reason)")
	dryRun := fs.Bool("dry-run", false, "print what would be redone and why, and change nothing")
	asJSON := fs.Bool("json", false, "print the plan and the result as JSON")
	spool := fs.String("spool", os.TempDir(), "directory for a call's media while it is recorded (sealed)")
	comfortNoise := fs.String("comfort-noise", "generate", "as for verbatim process: generate or silence")
	pciTenants := fs.String("pci-tenants", os.Getenv("VERBATIM_PCI_TENANTS"), "as for verbatim process (env VERBATIM_PCI_TENANTS): the new recordings of these tenants have their DTMF masked")
	workers := fs.Int("workers", 2, "calls redone at once")
	perTxn := fs.Int("calls-per-transaction", 32, "about this many calls redone per Kafka transaction (the unit a restarted job does not redo)")
	retention := fs.String("retention", os.Getenv("VERBATIM_RETENTION"), "as for verbatim process (env VERBATIM_RETENTION); a new recording is also locked at least as long as the one it supersedes")
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reprocess: unexpected argument %q", fs.Arg(0))
	}
	retain, err := parseRetention(*retention)
	if err != nil {
		return fmt.Errorf("reprocess: --retention: %w", err)
	}
	if *job == "" {
		return fmt.Errorf("reprocess: --job NAME is required (a name of your choice: running it again resumes it)")
	}
	if *comfortNoise != "generate" && *comfortNoise != "silence" {
		return fmt.Errorf("reprocess: --comfort-noise is generate or silence, not %q", *comfortNoise)
	}
	if *force && strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("reprocess: --force redoes calls this build would record alike: say why with --reason")
	}
	sel := processors.Selection{Tenant: *tenant, CallIDs: list(*callIDs), Codecs: list(*codecs), Statuses: list(*statuses), Failure: *failure}
	for _, st := range sel.Statuses {
		if !slices.Contains(schemas.RecordingStatuses, st) {
			return fmt.Errorf("reprocess: --status %q: complete, partial, \"no audio\", failed or unverified", st)
		}
	}
	if *from != "" {
		if sel.From, err = parseDay(*from); err != nil {
			return fmt.Errorf("reprocess: --from: %w", err)
		}
	}
	if *to != "" {
		if sel.To, err = parseDay(*to); err != nil {
			return fmt.Errorf("reprocess: --to: %w", err)
		}
	}
	actor := operator()
	cfg := processors.ReprocessConfig{Kafka: kafka.config("verbatim-reprocess", stderr), Job: *job, Select: sel, Reason: *reason, Force: *force,
		DryRun: *dryRun, SpoolDir: *spool, SilentComfortNoise: *comfortNoise == "silence", Actor: actor, Workers: *workers, Retention: retain,
		CallsPerTransaction: *perTxn, PCI: pciTenantsFunc(*pciTenants), Logger: warnLogger(stderr)}
	if !*dryRun {
		if cfg.Keys, err = kf.manager(); err != nil {
			return err
		}
		store, where, err := sf.open(ctx)
		if err != nil {
			return err
		}
		cfg.Store = store
		fmt.Fprintf(stderr, "reprocess: job %s, %s; recordings to %s\n", *job, sel, where)
	}
	planned := false
	cfg.Progress = func(s processors.ReprocessStats) {
		if !planned {
			planned = true
			fmt.Fprintf(stderr, "reprocess: planned from %d recording events: %d recordings selected, %d to redo (%d done before), %d skipped\n",
				s.Scanned, s.Selected, s.ToDo, s.Done, s.Skipped)
			return
		}
		fmt.Fprintf(stderr, "reprocess: %d of %d done, %d failed, %d remaining, %.1f calls/s, ETA %s\n",
			s.Done, s.ToDo, s.Failed, s.Remaining, s.Rate, s.ETA.Round(time.Second))
	}
	rep, runErr := processors.Reprocess(ctx, cfg)
	if runErr != nil && rep.Plan == nil {
		return runErr // nothing planned: a bad setting, or Kafka unreachable
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rep.Plan == nil {
			rep.Plan = []processors.Planned{}
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
		return runErr
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED (UTC)\tCALL\tRECORDING\tSTATUS\tCODECS\tWHAT\tWHY")
	for _, pl := range rep.Plan {
		what, why := "redo", pl.Reason
		switch {
		case pl.Skip != "":
			what, why = "skip", pl.Skip
		case pl.Done:
			what = "done before"
		case rep.Stats.Failures[pl.CallID] != "":
			what, why = "FAILED", rep.Stats.Failures[pl.CallID]
		case !*dryRun && runErr == nil:
			what = "redone as " + pl.NewRecordingID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", pl.StartedAt.UTC().Format("2006-01-02 15:04:05"), pl.CallID, pl.RecordingID,
			pl.Status, strings.Join(pl.Codecs, ","), what, why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := rep.Stats
	verb, n := "redid", s.Done
	if *dryRun {
		verb, n = "would redo", s.ToDo
	}
	fmt.Fprintf(stdout, "reprocess (%s): %d recordings selected: %s %d (%d by an earlier run of the job), skipped %d, failed %d, remaining %d; processing %q\n",
		*job, s.Selected, verb, n, doneBefore(rep.Plan), s.Skipped, s.Failed, s.Remaining, rep.Processing)
	for _, id := range slices.Sorted(maps.Keys(s.Failures)) {
		fmt.Fprintf(stdout, "  call %s not redone (its current recording stays): %s\n", id, s.Failures[id])
	}
	return runErr
}

func doneBefore(plan []processors.Planned) int {
	n := 0
	for _, pl := range plan {
		if pl.Done {
			n++
		}
	}
	return n
}

// list splits a comma-separated flag value.
func list(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
