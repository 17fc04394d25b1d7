package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// The end of recordings' lives, run by an operator: `verbatim erasure`
// (a data subject's calls erased, and the proof), `verbatim hold`
// (legal holds placed, listed, and released by two operators), and
// `verbatim expire` (recordings past their retention deleted, or counted
// with --dry-run). Signed-in administrators do the same through the API.

const lifecycleUse = `usage:
  verbatim erasure request --tenant T --subject ID [--reason R] [--request-id ID]
  verbatim erasure proof REQUEST-ID --tenant T [--json]
  verbatim hold place --tenant T [--call-id C]... [--party P] --label L --reason R
  verbatim hold list --tenant T
  verbatim hold release HOLD-ID --tenant T     (asks; another operator approves)
  verbatim hold approve HOLD-ID --tenant T
  verbatim expire --tenant T [--dry-run]
  verbatim retention apply --tenant T --class KIND=VALUE=KEEP... [--dry-run]
      KIND is tag, group (skill group), party or direction (inbound,
      outbound, internal); KEEP is days (2557d) or a duration (87600h)
  verbatim tenant offboard --tenant T --confirm T [--retention-waived WHY] [--dry-run] [--json]
      destroys the tenant's key-encryption key, shreds its data keys,
      deletes its rows and objects, and proves it; refused under a legal
      hold, and while objects are locked unless --retention-waived says why`

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// lifecycleEnv is what every lifecycle command opens.
type lifecycleEnv struct {
	l     *lifecycle.Lifecycle
	kcfg  kafkaclient.Config
	close func()
}

func openLifecycle(ctx context.Context, kafka kafkaFlags, ch chFlags, sf storeFlags, stderr io.Writer) (*lifecycleEnv, error) {
	var closers []func()
	fail := func(err error) (*lifecycleEnv, error) {
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	kcfg := kafka.config("verbatim-lifecycle", stderr)
	host, _ := os.Hostname()
	writeCl, err := kafka.client("verbatim-lifecycle", stderr, kgo.TransactionalID(fmt.Sprintf("verbatim-lifecycle-%s-%d", host, os.Getpid())))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, writeCl.Close)
	regCl, err := kafkaclient.New(kcfg, lifecycle.ConsumeOpts()...)
	if err != nil {
		return fail(err)
	}
	reg := lifecycle.StartRegistry(regCl)
	closers = append(closers, reg.Close)
	conn, db, err := ch.openMigrated(ctx)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { conn.Close() })
	store, _, err := sf.open(ctx)
	if err != nil {
		return fail(err)
	}
	l, err := lifecycle.New(lifecycle.Config{Kafka: kcfg, Writer: &api.KafkaWriter{Client: writeCl}, Registry: reg, Conn: conn, Database: db,
		Store: store, Producer: "verbatim-lifecycle"})
	if err != nil {
		return fail(err)
	}
	return &lifecycleEnv{l: l, kcfg: kcfg, close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}}, nil
}

func operatorActor(tenant string) *verbatimv1.Actor {
	return &verbatimv1.Actor{Subject: operator(), Role: "operator", Tenant: tenant}
}

func runLifecycle(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	sub := ""
	if cmd != "expire" {
		if len(args) == 0 {
			return errors.New(lifecycleUse)
		}
		sub, args = args[0], args[1:]
	}
	name := strings.TrimSpace(cmd + " " + sub)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	ch := addClickHouseFlags(fs)
	sf := addStoreFlags(fs)
	kf := addKeyFlags(fs)
	tenant := fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant")
	subject := fs.String("subject", "", "erasure: the data subject's phone number, SIP URI, e-mail address or agent id")
	reason := fs.String("reason", "", "why: the request's ground, the hold's matter")
	requestID := fs.String("request-id", "", "erasure: the request's id (default a new one; the same id again finishes an interrupted request)")
	label := fs.String("label", "", "hold: its label (the matter or case)")
	party := fs.String("party", "", "hold: also every call of this party, those recorded later too")
	var callIDs, classFlags multiFlag
	fs.Var(&callIDs, "call-id", "hold: a call to hold (repeatable)")
	fs.Var(&classFlags, "class", "retention apply: a retention class, KIND=VALUE=KEEP, e.g. tag=mifid=2557d (repeatable)")
	dryRun := fs.Bool("dry-run", false, "expire, retention apply: count what would be done, change nothing")
	asJSON := fs.Bool("json", false, "proof, tenant offboard: as JSON")
	confirm := fs.String("confirm", "", "tenant offboard: the tenant's name again")
	waived := fs.String("retention-waived", "", "tenant offboard: why the retention of locked objects no longer binds (the contract's end, the export taken)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	needID := name == "erasure proof" || name == "hold release" || name == "hold approve"
	if needID != (len(pos) == 1) || len(pos) > 1 {
		return errors.New(lifecycleUse)
	}
	var classes []lifecycle.Class
	if name == "retention apply" {
		if len(classFlags) == 0 {
			return errors.New("retention apply: at least one --class KIND=VALUE=KEEP, e.g. --class tag=mifid=2557d")
		}
		for _, v := range classFlags {
			c, err := parseClass(v)
			if err != nil {
				return fmt.Errorf("retention apply: --class %w", err)
			}
			classes = append(classes, c)
		}
	}
	env, err := openLifecycle(ctx, kafka, ch, sf, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	l, by := env.l, operatorActor(*tenant)
	switch name {
	case "erasure request":
		if *reason == "" {
			return errors.New("erasure request: --reason (the request's ground, e.g. \"Art. 17(1)(a), ticket 123\")")
		}
		rec, err := l.Erase(ctx, lifecycle.ErasureRequest{Tenant: *tenant, RequestID: *requestID, Subject: *subject, Reason: *reason, By: by})
		if rec != nil {
			printErasure(stdout, rec)
		}
		return err
	case "erasure proof":
		km, err := kf.manager()
		if err != nil {
			return err
		}
		regCl, err := kafkaclient.New(env.kcfg, keyreg.ConsumeOpts()...)
		if err != nil {
			return err
		}
		reg := keyreg.Start(regCl)
		defer reg.Close()
		p, err := l.Prove(ctx, *tenant, pos[0], reg, km)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(p)
		}
		printProof(stdout, p)
		if !p.OK {
			return fmt.Errorf("erasure proof: request %s is not proven erased (see above)", pos[0])
		}
		return nil
	case "hold place":
		h, err := l.PlaceHold(ctx, lifecycle.HoldRequest{Tenant: *tenant, Label: *label, Reason: *reason, CallIDs: callIDs, Party: *party, By: by})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hold %s placed on %d calls%s: nothing of them is deleted until two operators or administrators release it\n",
			h.GetHoldId(), len(h.GetCallIds()), map[bool]string{true: " and every call of " + h.GetParty(), false: ""}[h.GetParty() != ""])
		return nil
	case "hold list":
		if err := l.Registry().Sync(ctx); err != nil {
			return err
		}
		hs := l.Registry().Holds(*tenant)
		fmt.Fprintf(stdout, "%d holds in tenant %s\n", len(hs), *tenant)
		for _, h := range hs {
			fmt.Fprintf(stdout, "  %s  %-17s  %q  %d calls  party %q  placed by %s at %s\n", h.GetHoldId(), strings.TrimPrefix(h.GetState().String(), "HOLD_STATE_"),
				h.GetLabel(), len(h.GetCallIds()), h.GetParty(), h.GetPlacedBy().GetSubject(), h.GetPlacedAt().AsTime().UTC().Format(time.RFC3339))
		}
		return nil
	case "hold release":
		if _, err := l.RequestRelease(ctx, *tenant, pos[0], by); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hold %s: release asked by %s; it stays in force until another operator approves (verbatim hold approve %s)\n", pos[0], by.GetSubject(), pos[0])
		return nil
	case "hold approve":
		if _, err := l.ApproveRelease(ctx, *tenant, pos[0], by); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hold %s released\n", pos[0])
		return nil
	case "expire":
		rep, err := l.Expire(ctx, *tenant, *dryRun, by, func(done, total int) {
			fmt.Fprintf(stderr, "\rexpire: %d of %d calls due ", done, total)
		})
		if rep.Due > 0 {
			fmt.Fprintln(stderr)
		}
		verb := "erased"
		if *dryRun {
			verb = "would be erased (dry run: nothing deleted)"
		}
		fmt.Fprintf(stdout, "tenant %s: %d calls past their retention: %d %s (%d objects), %d kept by a legal hold, %d locked longer in storage; %d leftover objects %s\n",
			*tenant, rep.Due, rep.Erased, verb, rep.ObjectsDeleted, rep.Held, rep.NotYet, rep.LeftoversDeleted, map[bool]string{true: "would be deleted", false: "deleted"}[*dryRun])
		return err
	case "tenant offboard":
		km, err := kf.manager()
		if err != nil {
			return err
		}
		d, ok := km.(interface {
			keys.Manager
			keys.Destroyer
		})
		if !ok {
			return fmt.Errorf("tenant offboard: the key manager %s cannot destroy keys", km.Kind())
		}
		rep, err := l.Offboard(ctx, lifecycle.OffboardRequest{Tenant: *tenant, Confirm: *confirm, RetentionWaived: *waived, DryRun: *dryRun, By: by, Keys: d,
			Progress: func(step string) { fmt.Fprintf(stderr, "tenant offboard: %s\n", step) }})
		if *asJSON && rep.RunID != "" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return errors.Join(err, enc.Encode(rep))
		}
		fmt.Fprintf(stdout, "tenant %s: %d data keys, %d calls, %d objects (%d locked", rep.Tenant, rep.DataKeys, rep.Calls, rep.Objects, rep.Locked)
		if !rep.LockedUntil.IsZero() {
			fmt.Fprintf(stdout, ", the latest until %s", rep.LockedUntil.Format(time.RFC3339))
		}
		fmt.Fprintln(stdout, ")")
		switch {
		case err != nil:
		case *dryRun:
			fmt.Fprintln(stdout, "dry run: nothing destroyed")
		default:
			fmt.Fprintf(stdout, "KEK destroyed; %d data keys shredded; rows of %d calls deleted; %d objects deleted, %d kept by their lock as ciphertext without keys\n",
				rep.KeysShredded, rep.CallsErased, rep.ObjectsDeleted, len(rep.ObjectsKept))
			for _, p := range rep.Proof {
				fmt.Fprintf(stdout, "  proven: %s\n", p)
			}
		}
		return err
	case "retention apply":
		rep, err := l.ApplyRetention(ctx, *tenant, classes, *dryRun, by, func(done, total int) {
			fmt.Fprintf(stderr, "\rretention apply: %d of %d calls ", done, total)
		})
		if rep.Matched > 0 {
			fmt.Fprintln(stderr)
		}
		for _, c := range classes {
			fmt.Fprintf(stdout, "  class %s (keep %s): %d calls\n", c, c.Keep, rep.ByClass[c.String()])
		}
		verb := "extended"
		if *dryRun {
			verb = "would be extended (dry run: nothing changed)"
		}
		fmt.Fprintf(stdout, "tenant %s: %d calls in a class: %d %s (%d objects), %d locked long enough, %d not stored yet\n",
			*tenant, rep.Matched, rep.Extended, verb, rep.ObjectsExtended, rep.Unchanged, rep.NoRecording)
		return err
	}
	return errors.New(lifecycleUse)
}

// parseClass reads KIND=VALUE=KEEP: the value is what lies between the
// first and the last "=", so a SIP URI with parameters is one.
func parseClass(v string) (lifecycle.Class, error) {
	i, j := strings.Index(v, "="), strings.LastIndex(v, "=")
	if i < 0 || i == j {
		return lifecycle.Class{}, fmt.Errorf("%q: KIND=VALUE=KEEP, e.g. tag=mifid=2557d", v)
	}
	keep, err := parseKeep(v[j+1:])
	if err != nil {
		return lifecycle.Class{}, err
	}
	c := lifecycle.Class{Kind: v[:i], Value: v[i+1 : j], Keep: keep}
	return c, c.Validate()
}

func printErasure(w io.Writer, rec *verbatimv1.ErasureRecord) {
	counts := map[verbatimv1.CallOutcomeKind]int{}
	for _, o := range rec.GetOutcomes() {
		counts[o.GetKind()]++
		switch o.GetKind() {
		case verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED:
			fmt.Fprintf(w, "  %s  erased: %d data keys shredded, %d objects deleted, %d kept as ciphertext under lock\n", o.GetCallId(),
				len(o.GetShreddedKeyIds()), len(o.GetDeletedObjects()), len(o.GetLockedObjects()))
		default:
			fmt.Fprintf(w, "  %s  REFUSED: %s\n", o.GetCallId(), o.GetReason())
		}
	}
	state := "finished"
	if rec.GetFinishedAt() == nil {
		state = "NOT FINISHED: run it again with --request-id " + rec.GetRequestId()
	}
	fmt.Fprintf(w, "erasure %s of tenant %s: %d calls of the subject: %d erased, %d refused under retention, %d refused under legal hold; %s\n",
		rec.GetRequestId(), rec.GetTenant(), len(rec.GetOutcomes()), counts[verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED],
		counts[verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_RETENTION], counts[verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_REFUSED_HOLD], state)
}

func printProof(w io.Writer, p *lifecycle.Proof) {
	rec := p.Request
	fmt.Fprintf(w, "erasure %s of tenant %s, asked by %s at %s: %q\n", rec.GetRequestId(), rec.GetTenant(), rec.GetRequestedBy().GetSubject(),
		rec.GetRequestedAt().AsTime().UTC().Format(time.RFC3339), rec.GetReason())
	for _, c := range p.Calls {
		fmt.Fprintf(w, "call %s:\n", c.CallID)
		for k, v := range c.Keys {
			fmt.Fprintf(w, "  data key %s: %s\n", k, v)
		}
		fmt.Fprintf(w, "  rows in the search projection: %d\n", c.SearchRows)
		for k, v := range c.Objects {
			fmt.Fprintf(w, "  object %s: %s\n", k, v)
		}
	}
	for _, o := range rec.GetOutcomes() {
		if o.GetKind() != verbatimv1.CallOutcomeKind_CALL_OUTCOME_KIND_ERASED {
			fmt.Fprintf(w, "call %s: kept: %s\n", o.GetCallId(), o.GetReason())
		}
	}
	fmt.Fprintf(w, "search finds %d erased calls by the subject's identifier\n", p.SubjectRows)
	fmt.Fprintf(w, "the shredded keys' wrapped bytes leave the keys topic's log within %s of their tombstones (segment.ms %s + max.compaction.lag.ms %s)\n",
		p.KeysGoneWithin, schemas.KeysSegmentAge, schemas.KeysCompactionLag)
	if p.OK {
		fmt.Fprintln(w, "proven: every erased call's keys are shredded and nothing in search is left of it")
	} else {
		fmt.Fprintln(w, "NOT PROVEN: see the lines above")
	}
}
