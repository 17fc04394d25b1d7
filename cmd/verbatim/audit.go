package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/internal/keys"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// auditSigner is the key manager's audit signing key.
func auditSigner(kf keyFlags) (keys.AuditSigner, error) {
	km, err := kf.manager()
	if err != nil {
		return nil, err
	}
	s, ok := km.(keys.AuditSigner)
	if !ok {
		return nil, fmt.Errorf("the key manager %s cannot sign the audit log", km.Kind())
	}
	return s, nil
}

// runProjectAudit is `verbatim project audit`.
func runProjectAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("project audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	ch := addClickHouseFlags(fs)
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	idle := fs.Bool("exit-when-idle", false, "exit once the audit topic is read to its end offsets (and every log that grew is checkpointed); default: run until stopped")
	every := fs.Duration("checkpoint-every", time.Minute, "a tenant's log that grew gets a signed checkpoint at least this often")
	retention := fs.Duration("checkpoint-retention", 10*365*24*time.Hour, "how long each checkpoint object is locked (compliance mode) in the store")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("project audit: unexpected argument %q", fs.Arg(0))
	}
	signer, err := auditSigner(kf)
	if err != nil {
		return fmt.Errorf("project audit: %w", err)
	}
	store, where, err := sf.open(ctx)
	if err != nil {
		return err
	}
	conn, db, err := ch.openMigrated(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	start := time.Now()
	st, err := auditlog.Run(ctx, auditlog.Config{Kafka: kafka.config("verbatim-project-audit", stderr), Conn: conn, Database: db, Signer: signer,
		Store: store, Retention: *retention, CheckpointEvery: *every, ExitWhenIdle: *idle, Logger: warnLogger(stderr)})
	fmt.Fprintf(stdout, "audit log: %d events appended to the logs of %d tenants, %d checkpoints signed and stored in %s, in %s (ClickHouse database %s)\n",
		st.Appended, st.Tenants, st.Checkpoints, where, time.Since(start).Round(time.Millisecond), db)
	return err
}

// runAudit is `verbatim audit`: the log's key, verification and proofs.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: verbatim audit search --tenant T [--call-id C] [--actor S] [--action A] [--from T] [--to T] [--format table|json|csv|xlsx -o FILE] | key | verify --tenant T | prove --tenant T EVENT-ID | prove-recording --tenant T CALL-ID | consistency --tenant T OLD NEW | check --key VKEY PROOF.json"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub := args[0]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	ch := addClickHouseFlags(fs)
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	tenant := fs.String("tenant", "demo", "tenant whose log")
	noTopic := fs.Bool("no-topic", false, "verify: the table and the checkpoints only, not the topic too")
	allTenants := fs.Bool("all-tenants", false, "verify: every tenant's log (a JSON list of reports), not --tenant's alone")
	vkey := fs.String("key", os.Getenv("VERBATIM_AUDIT_KEY"), "check: the log's verifier key (verbatim audit key prints it; env VERBATIM_AUDIT_KEY)")
	var sq auditlog.Query
	fs.StringVar(&sq.CallID, "call-id", "", "search: the call an event concerns (Verbatim's call id)")
	fs.StringVar(&sq.Actor, "actor", "", "search: the actor's subject")
	fs.StringVar(&sq.Action, "action", "", "search: the action, e.g. recording.play")
	fs.StringVar(&sq.Result, "result", "", "search: SUCCESS, DENIED or ERROR")
	from := fs.String("from", "", "search: events at or after this time (RFC 3339, or a day YYYY-MM-DD, UTC)")
	to := fs.String("to", "", "search: events before this time (RFC 3339, or a day)")
	limit := fs.Int("limit", 100, "search: entries to show, newest first (table, json); exports take every entry")
	format := fs.String("format", "table", "search: table, json, csv or xlsx")
	output := fs.String("o", "", "search: the file to write (csv, xlsx; default standard output for csv)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	out := json.NewEncoder(stdout)
	out.SetIndent("", "  ")
	if sub == "check" {
		if len(pos) != 1 || *vkey == "" {
			return errors.New("usage: verbatim audit check --key VKEY PROOF.json (- for standard input)")
		}
		return checkProof(pos[0], *vkey, stdout)
	}
	signer, err := auditSigner(kf)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if sub == "key" {
		k, err := auditlog.VerifierKey(ctx, signer)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, k)
		return nil
	}
	conn, db, err := ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	switch sub {
	case "search":
		return auditSearch(ctx, conn, db, sq, *tenant, *from, *to, *limit, *format, *output, stdout)
	case "verify":
		k, err := auditlog.VerifierKey(ctx, signer)
		if err != nil {
			return err
		}
		v, err := note.NewVerifier(k)
		if err != nil {
			return err
		}
		store, _, err := sf.open(ctx)
		if err != nil {
			return err
		}
		tenants := []string{*tenant}
		if *allTenants {
			if tenants, err = auditlog.Tenants(ctx, conn, db); err != nil {
				return err
			}
		}
		var reports []auditlog.Report
		var bad []string
		for _, tn := range tenants {
			cfg := auditlog.VerifyConfig{Conn: conn, Database: db, Tenant: tn, Store: store, Verifier: v}
			if !*noTopic {
				kc := kafka.config("verbatim-audit-verify", stderr)
				cfg.Kafka = &kc
			}
			r, err := auditlog.Verify(ctx, cfg)
			if err != nil {
				return fmt.Errorf("audit verify: tenant %s: %w", tn, err)
			}
			reports = append(reports, r)
			if !r.OK() {
				bad = append(bad, fmt.Sprintf("tenant %s's log is NOT intact: %d problems, the first at entry %d: %s", tn, len(r.Problems), r.FirstBad, r.Problems[0]))
				continue
			}
			fmt.Fprintf(stderr, "audit verify: tenant %s's log is intact: %d entries checked (%s), %d signed checkpoints match, the latest of size %d; %s\n",
				tn, r.Entries, r.Source, r.Checkpoints, r.LatestSize, uncovered(r, *noTopic))
		}
		var enc any = reports
		if !*allTenants {
			enc = reports[0]
		}
		if err := out.Encode(enc); err != nil {
			return err
		}
		if len(bad) > 0 {
			return fmt.Errorf("audit verify: %s", strings.Join(bad, "; "))
		}
		return nil
	case "prove", "prove-recording":
		if len(pos) != 1 {
			return fmt.Errorf("usage: verbatim audit %s --tenant T ID", sub)
		}
		prove := auditlog.Prove
		if sub == "prove-recording" {
			prove = auditlog.ProveRecording
		}
		ps, err := prove(ctx, conn, db, *tenant, pos[0])
		if err != nil {
			return err
		}
		if len(ps) == 1 {
			return out.Encode(ps[0])
		}
		return out.Encode(ps)
	case "consistency":
		if len(pos) != 2 {
			return errors.New("usage: verbatim audit consistency --tenant T OLD-SIZE NEW-SIZE")
		}
		o, err1 := strconv.ParseInt(pos[0], 10, 64)
		n, err2 := strconv.ParseInt(pos[1], 10, 64)
		if err1 != nil || err2 != nil {
			return errors.New("audit consistency: OLD and NEW are checkpoint sizes (numbers)")
		}
		p, err := auditlog.Consistency(ctx, conn, db, *tenant, o, n)
		if err != nil {
			return err
		}
		return out.Encode(p)
	}
	return errors.New(use)
}

// checkProof checks a proof file offline and says what it proves.
func checkProof(path, vkey string, stdout io.Writer) error {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("audit check: --key: %w", err)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("audit check: %s is not a proof (one JSON object, as verbatim audit prove writes): %w", path, err)
	}
	if _, ok := probe["old_size"]; ok {
		var p auditlog.ConsistencyProof
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("audit check: %w", err)
		}
		if err := auditlog.CheckConsistency(p, v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "proof checked: tenant %s's signed log of %d entries is a prefix of its signed log of %d: nothing was changed or removed in between\n", p.Tenant, p.Old, p.New)
		return nil
	}
	var p auditlog.InclusionProof
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("audit check: %w", err)
	}
	if err := auditlog.CheckInclusion(p, v); err != nil {
		return err
	}
	ev := &verbatimv1.AuditEvent{}
	if err := proto.Unmarshal(p.Leaf, ev); err != nil {
		fmt.Fprintf(stdout, "proof checked: entry %d is in tenant %s's signed log of %d entries (a record that is not an AuditEvent)\n", p.Index, p.Tenant, p.TreeSize)
		return nil
	}
	fmt.Fprintf(stdout, "proof checked: entry %d is in tenant %s's signed log of %d entries: %s by %s (%s) at %s, %s\n", p.Index, p.Tenant, p.TreeSize,
		ev.GetAction(), ev.GetActor().GetSubject(), ev.GetActor().GetRole(), ev.GetOccurredAt().AsTime().UTC().Format(time.RFC3339), ev.GetResult())
	if r := ev.GetRecording(); r != nil {
		fmt.Fprintf(stdout, "  recording %s of call %s, stored %s as %s: ciphertext SHA-256 %x, plaintext SHA-256 %x\n", r.GetRecordingId(), r.GetCallId(),
			r.GetStoredAt().AsTime().UTC().Format(time.RFC3339), r.GetObjectKey(), r.GetCiphertextSha256(), r.GetPlaintextSha256())
	}
	return nil
}

// parseInterspersed parses flags before and after the positional
// arguments ("prove EVENT-ID --tenant demo"), which it returns.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// operatorAudit records an operator's action on the audit topic,
// acknowledged: by whom (the OS user), what (a capture of a file, an
// interface or a SIPREC server started or stopped; a key rotated...) and
// with what result.
func operatorAudit(ctx context.Context, cl *kgo.Client, tenant, action, targetType, source, detail string, failure error) error {
	now := time.Now()
	id := schemas.RandomID()
	ev := &verbatimv1.AuditEvent{EventId: id, OccurredAt: timestamppb.New(now), Tenant: tenant, Action: action,
		Actor:  &verbatimv1.Actor{Subject: operator(), Role: "operator", Tenant: tenant},
		Target: &verbatimv1.Target{Type: targetType, Id: source}, Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS, Reason: detail,
		UserAgent: "verbatim/" + version()}
	if failure != nil {
		ev.Result, ev.Reason = verbatimv1.AuditResult_AUDIT_RESULT_ERROR, strings.TrimPrefix(detail+": "+failure.Error(), ": ")
	}
	rec, err := schemas.NewRecord(schemas.TopicAudit, []byte(tenant), schemas.Envelope{ID: id, Tenant: tenant, OccurredAt: now, Producer: "verbatim-" + strings.SplitN(action, ".", 2)[0]}, ev)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(actx, rec).FirstErr(); err != nil {
		return fmt.Errorf("the audit event %s of %s could not be written: %w", action, source, err)
	}
	return nil
}

// parseWhen reads a time flag: RFC 3339, or a day (UTC).
func parseWhen(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: an RFC 3339 time or a day YYYY-MM-DD", name, v)
	}
	return t, nil
}

// auditSearch is `verbatim audit search`: entries as a table or JSON,
// or every entry selected exported as CSV or XLSX.
func auditSearch(ctx context.Context, conn driver.Conn, db string, q auditlog.Query, tenant, from, to string, limit int, format, output string, stdout io.Writer) error {
	q.Tenant = tenant
	var err error
	if q.From, err = parseWhen("from", from); err != nil {
		return err
	}
	if q.To, err = parseWhen("to", to); err != nil {
		return err
	}
	switch format {
	case "csv", "xlsx":
		w := stdout
		if output != "" {
			f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		} else if format == "xlsx" {
			return errors.New("audit search --format xlsx: say where to write it (-o FILE.xlsx)")
		}
		n, err := auditlog.Export(ctx, conn, db, q, format, w)
		if err != nil {
			return err
		}
		if output != "" {
			fmt.Fprintf(stdout, "%d entries of tenant %s's audit log written to %s\n", n, tenant, output)
		}
		return nil
	case "table", "json":
	default:
		return fmt.Errorf("audit search --format %q: table, json, csv or xlsx", format)
	}
	if limit < 1 || limit > auditlog.MaxLimit {
		return fmt.Errorf("audit search --limit: 1 to %d", auditlog.MaxLimit)
	}
	q.Limit, q.Descending = limit, true
	es, _, err := auditlog.Search(ctx, conn, db, q)
	if err != nil {
		return err
	}
	if format == "json" {
		if es == nil {
			es = []auditlog.Entry{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(es)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME (UTC)\tACTION\tACTOR\tROLE\tTARGET\tCALL\tRESULT\tREASON")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", e.Index, e.OccurredAt.UTC().Format(time.DateTime), e.Action, e.ActorSubject, e.ActorRole,
			e.TargetType, e.TargetID, e.CallID, e.Result, e.Reason)
	}
	return tw.Flush()
}

// uncovered says what vouches for the entries after the latest
// checkpoint: the topic, or (with --no-topic) nothing yet.
func uncovered(r auditlog.Report, noTopic bool) string {
	switch {
	case r.Uncovered == 0:
		return "every entry is under a signed checkpoint"
	case noTopic:
		return fmt.Sprintf("%d entries since it are NOT checked: no checkpoint covers them yet, and --no-topic skipped the topic", r.Uncovered)
	}
	return fmt.Sprintf("%d entries since it are checked against the topic only (a checkpoint follows within --checkpoint-every)", r.Uncovered)
}
