package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/ops"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

// projectMetrics exports a search projection's totals, as its last report
// left them, and its consumer lag as the brokers say at the scrape.
func projectMetrics(ctx context.Context, srv *ops.Server, last *atomic.Pointer[search.Stats], adm *kadm.Client, group string) {
	srv.CounterFunc("project", "records_total", "Records projected into ClickHouse, at the last report (every second).", func() float64 { return float64(last.Load().Records) })
	srv.CounterFunc("project", "unreadable_total", "Sealed values that could not be read (their key missing, erased or refused).",
		func() float64 { return float64(last.Load().Unreadable) })
	srv.GaugeFunc("project", "lag_records", "Offsets of the search topics the group has still to read, summed over partitions, as the brokers say at the scrape.",
		func() float64 {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			n, err := kafkaclient.GroupRemaining(lctx, adm, group, search.Topics()...)
			if err != nil {
				return math.NaN()
			}
			return float64(n)
		})
}

type chFlags struct{ addr, db *string }

func addClickHouseFlags(fs *flag.FlagSet) chFlags {
	return chFlags{
		addr: fs.String("clickhouse", envOr("VERBATIM_CLICKHOUSE_ADDR", "127.0.0.1:19000"), "ClickHouse native address (env VERBATIM_CLICKHOUSE_ADDR; user and password from VERBATIM_CLICKHOUSE_USER/_PASSWORD; "+
			"TLS with VERBATIM_CLICKHOUSE_TLS=true or the CA file VERBATIM_CLICKHOUSE_CA; to another host than loopback, plain text only with VERBATIM_CLICKHOUSE_INSECURE=true)"),
		db: fs.String("database", envOr("VERBATIM_CLICKHOUSE_DB", "verbatim"), "ClickHouse database of the search projection"),
	}
}

func (c chFlags) open(ctx context.Context) (driver.Conn, string, error) {
	return search.Open(ctx, clickhouseConfig(*c.addr, *c.db))
}

// clickhouseConfig is how the roles reach ClickHouse at addr: its user,
// password and TLS from the environment.
func clickhouseConfig(addr, db string) search.Config {
	return search.Config{Addr: addr, Database: db, User: os.Getenv("VERBATIM_CLICKHOUSE_USER"), Password: os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD"),
		TLS: os.Getenv("VERBATIM_CLICKHOUSE_TLS") == "true", CAFile: os.Getenv("VERBATIM_CLICKHOUSE_CA"), Insecure: os.Getenv("VERBATIM_CLICKHOUSE_INSECURE") == "true"}
}

// openMigrated opens the database and applies the schema's pending
// migrations (the projections make their tables).
func (c chFlags) openMigrated(ctx context.Context) (driver.Conn, string, error) {
	conn, db, err := c.open(ctx)
	if err != nil {
		return nil, "", err
	}
	if _, err := search.Migrate(ctx, conn, db); err != nil {
		conn.Close()
		return nil, "", err
	}
	return conn, db, nil
}

func runProject(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "audit" {
		return runProjectAudit(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "search" {
		return errors.New("usage: verbatim project search [flags] | verbatim project audit [flags]")
	}
	fs := flag.NewFlagSet("project search", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	group := fs.String("group", "verbatim-project-search", "consumer group")
	host, _ := os.Hostname()
	instance := fs.String("instance", host, "name of this projection, stable across its restarts and unique in the group (its static member id)")
	idle := fs.Bool("exit-when-idle", false, "exit once the group has read every topic to its end offsets (everything written before is projected); default: run until stopped")
	rebuild := fs.Bool("rebuild", false, "rebuild the projection into --database (a fresh one) from the start of the topics while the old one keeps serving, then compare it with --compare; resumable: run it again to go on")
	compare := fs.String("compare", "", "with --rebuild, the database to compare the rebuilt one with, call for call per tenant and day (default env VERBATIM_CLICKHOUSE_DB or verbatim)")
	ch := addClickHouseFlags(fs)
	kf := addKeyFlags(fs)
	of := addOpsFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("project search: unexpected argument %q", fs.Arg(0))
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if *rebuild {
		if *compare == "" {
			*compare = envOr("VERBATIM_CLICKHOUSE_DB", "verbatim")
		}
		if !explicit["database"] || *ch.db == *compare {
			return fmt.Errorf("project search --rebuild: say which fresh database to build (--database NEW), not the one it replaces (%s)", *compare)
		}
		if !explicit["group"] {
			// Its own group: the serving projection's offsets are not
			// touched, and a rebuild run again goes on where it stopped.
			*group = "verbatim-project-search-rebuild-" + *ch.db
		}
		*idle = true
	}
	km, err := kf.manager()
	if err != nil {
		return err
	}
	conn, db, err := ch.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	began := time.Now()
	var progress func(search.Stats)
	if *rebuild {
		fmt.Fprintf(stderr, "rebuilding the search projection into database %s (group %s: from the start of the topics, or where its last run stopped)\n", db, *group)
		progress = func(st search.Stats) {
			rate := float64(st.Records) / max(time.Since(began).Seconds(), 1e-9)
			eta := "?"
			if rate > 0 {
				eta = (time.Duration(float64(st.Behind)/rate) * time.Second).Round(time.Second).String()
			}
			fmt.Fprintf(stderr, "  %d records projected, about %d to go, %.0f/s, ETA %s\n", st.Records, st.Behind, rate, eta)
		}
	}
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	srv, ping, err := of.start(octx, "project", kafka, "verbatim-project-search", stderr)
	if err != nil {
		return err
	}
	kcfg := kafka.config("verbatim-project-search", stderr)
	var last atomic.Pointer[search.Stats]
	last.Store(&search.Stats{})
	every := time.Duration(0)
	if srv != nil {
		srv.Check("clickhouse", conn.Ping)
		projectMetrics(octx, srv, &last, kadm.NewClient(ping), *group)
		every = time.Second
	}
	report := progress
	progress = func(st search.Stats) {
		last.Store(&st)
		if report != nil {
			report(st)
		}
	}
	st, err := search.Run(ctx, search.RunConfig{Kafka: kcfg, Group: *group, Instance: *instance,
		Conn: conn, Database: db, Keys: km, ExitWhenCaughtUp: *idle, Logger: warnLogger(stderr), Progress: progress, ProgressEvery: every})
	fmt.Fprintf(stdout, "projected %d records into ClickHouse %s, database %s in %s\n", st.Records, *ch.addr, db, time.Since(began).Round(time.Millisecond))
	if st.Unreadable > 0 {
		fmt.Fprintf(stdout, "  warning: %d sealed values unreadable (their data key is missing, erased or refused by the key manager): those calls are listed without them\n", st.Unreadable)
	}
	if err != nil || !*rebuild || ctx.Err() != nil {
		return err
	}
	days, diffs, err := search.Compare(ctx, conn, *compare, db)
	if err != nil {
		return err
	}
	if len(diffs) == 0 {
		fmt.Fprintf(stdout, "%s and %s hold the same calls, participants, recordings and metadata on every tenant's day (%d days): switch to %s when ready\n",
			db, *compare, days, db)
		return nil
	}
	fmt.Fprintf(stdout, "%s and %s differ on %d of %d tenant days (%s / %s):\n", *compare, db, len(diffs), days, *compare, db)
	for _, d := range diffs {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	return fmt.Errorf("project search --rebuild: %s does not match %s on %d days (calls recorded since the rebuild started show here too: run it again to catch up)", db, *compare, len(diffs))
}

func runSearch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("search", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant to search")
	from := fs.String("from", "", "calls started at or after this time (RFC 3339)")
	to := fs.String("to", "", "calls started before this time (RFC 3339)")
	party := fs.String("party", "", "phone number or SIP URI of any participant")
	callID := fs.String("call-id", "", "Verbatim call id or SIP Call-ID")
	conversation := fs.String("conversation", "", "the calls of one conversation: a call and the transfers that continued it (see --json)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	agent := fs.String("agent", "", "calls whose contact-centre metadata names this agent id")
	skillGroup := fs.String("skill-group", "", "calls of this skill group (metadata)")
	variable := fs.String("variable", "", "calls with this call variable, NAME=VALUE (metadata)")
	tag := fs.String("tag", "", "calls tagged with this (through the API)")
	status := fs.String("status", "", fmt.Sprintf("calls whose current recording is %q", schemas.RecordingStatuses))
	newest := fs.Bool("newest-first", false, "newest calls first")
	history := fs.Bool("history", false, "also list each call's earlier recordings (those reprocessing superseded), with their completeness")
	limit := fs.Int("limit", 100, fmt.Sprintf("at most this many calls, a page (at most %d)", search.MaxLimit))
	after := fs.String("after", "", "the page after this cursor (the last page's output gives it)")
	ch := addClickHouseFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	q := search.Query{Tenant: *tenant, Party: *party, CallID: *callID, Conversation: *conversation, Limit: *limit, History: *history, After: *after,
		Agent: *agent, SkillGroup: *skillGroup, Status: *status, Descending: *newest, Tag: *tag}
	if *variable != "" {
		name, value, ok := strings.Cut(*variable, "=")
		if !ok || name == "" {
			return fmt.Errorf("search: --variable %q: want NAME=VALUE", *variable)
		}
		q.Variable = &search.Variable{Name: name, Value: value}
	}
	for _, tv := range []struct {
		s   string
		dst *time.Time
	}{{*from, &q.From}, {*to, &q.To}} {
		if tv.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, tv.s)
		if err != nil {
			return fmt.Errorf("search: bad time %q: want RFC 3339, e.g. 2016-11-26T10:00:00Z", tv.s)
		}
		*tv.dst = t
	}
	conn, db, err := ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Fprintf(stderr, "search: as operator %s of tenant %s, reading ClickHouse %s directly (signed-in users search through verbatim api)\n", operator(), *tenant, db)
	rs, next, err := search.SearchPage(ctx, conn, db, q)
	if err != nil {
		return err
	}
	if next != "" {
		defer fmt.Fprintf(stderr, "more calls: the next page is --after %s\n", next)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rs == nil {
			rs = []search.Result{}
		}
		return enc.Encode(rs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED (UTC)\tDURATION\tENDED BY\tFROM\tTO\tRECORDING\tSIP CALL-ID\tCALL")
	for _, r := range rs {
		var fromP, toP string
		for _, p := range r.Parties {
			switch { // passive capture's ids, or a SIPREC participant's role
			case p.ID == "caller" || p.Role == "PARTICIPANT_ROLE_CALLER" && fromP == "":
				fromP = p.URI
			case p.ID == "callee" || p.Role == "PARTICIPANT_ROLE_CALLEE" && toP == "":
				toP = p.URI
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.StartedAt.UTC().Format("2006-01-02 15:04:05"), r.Duration.Round(time.Millisecond),
			strings.ToLower(strings.TrimPrefix(r.EndReason, "END_REASON_")), fromP, toP, recordingSummary(r), r.SIPCallID, r.CallID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if rec := r.Recording; rec != nil && rec.Generation > 0 {
			fmt.Fprintf(stdout, "call %s: recording %s (generation %d, %s) supersedes %s: %s\n",
				r.CallID, rec.RecordingID, rec.Generation, rec.Processing, rec.Supersedes, rec.SupersedeReason)
		}
		for _, h := range r.History {
			fmt.Fprintf(stdout, "call %s: earlier recording %s (generation %d, stored %s): %s\n",
				r.CallID, h.RecordingID, h.Generation, h.StoredAt.UTC().Format(time.RFC3339), recordingSummary(search.Result{Recording: &h}))
		}
		if len(r.LinkedCalls) > 0 {
			fmt.Fprintf(stdout, "call %s is also recorded as %s (one conversation: SIPREC and passive capture, or two SRCs)\n",
				r.CallID, strings.Join(r.LinkedCalls, ", "))
		}
	}
	fmt.Fprintf(stdout, "%d calls\n", len(rs))
	return nil
}

// recordingSummary says in a few words whether a call was recorded and how
// completely, from the recording's ledgers: "complete, 425 audio packets",
// "partial: 0 of 246 audio packets recorded (246 not decodable)",
// "MISSING". A recording without ledgers (stored by an earlier version) is
// never called complete: nothing proved it.
func recordingSummary(r search.Result) string {
	rec := r.Recording
	if rec == nil {
		return r.Status
	}
	if rec.Failure != "" {
		return "FAILED: " + rec.Failure
	}
	if rec.Completeness == nil {
		return fmt.Sprintf("unverified: stored before ledgers (%d of %d packets in the recording)", rec.PacketsInRecording, rec.PacketsCaptured)
	}
	return rec.Completeness.String()
}
