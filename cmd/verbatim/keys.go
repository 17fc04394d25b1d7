package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/internal/keyops"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/processors"
)

// runKeys is `verbatim keys`: a tenant's KEK rotated, its data keys
// rewrapped to the latest version, and the old versions retired; each
// step audited.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: verbatim keys status --tenant T | rotate --tenant T | rewrap --tenant T | retire --tenant T --below N |\n" +
		"  reencrypt --tenant T (--key ID | --call ID)... --reason R [--dry-run] [--json]"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub := args[0]
	if sub == "reencrypt" {
		return runReencrypt(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	kf := addKeyFlags(fs)
	tenant := fs.String("tenant", "demo", "tenant whose key-encryption key")
	batch := fs.Int("batch", 250, "rewrap: data keys rewrapped and stored at once")
	below := fs.Uint("below", 0, "retire: KEK versions below this one stop unwrapping (every data key must be rewrapped first)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keys %s: unexpected argument %q", sub, fs.Arg(0))
	}
	km, err := kf.manager()
	if err != nil {
		return err
	}
	rot, ok := km.(keys.Rotator)
	if !ok {
		return fmt.Errorf("keys: the key manager %s cannot rotate keys", km.Kind())
	}
	kcfg := kafka.config("verbatim-keys", stderr)
	cl, err := kafka.client("verbatim-keys", stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	latest, min, err := rot.KEKVersions(ctx, *tenant)
	if err != nil {
		return err
	}
	switch sub {
	case "status":
		reg, err := keyops.Read(ctx, kcfg, *tenant)
		if err != nil {
			return err
		}
		byVersion := reg.ByVersion()
		versions := make([]uint32, 0, len(byVersion))
		for v := range byVersion {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		fmt.Fprintf(stdout, "tenant %s (%s): KEK version %d is the latest; versions below %d are retired\n", *tenant, km.Kind(), latest, min)
		for _, v := range versions {
			fmt.Fprintf(stdout, "  version %d: %d data keys\n", v, byVersion[v])
		}
		fmt.Fprintf(stdout, "  %d data keys in the registry, %d under older versions than the latest\n", len(reg.Keys), len(reg.Below(latest)))
		return nil
	case "rotate":
		v, err := rot.RotateKEK(ctx, *tenant)
		if aerr := operatorAudit(ctx, cl, *tenant, "key.rotate", "key", *tenant, fmt.Sprintf("KEK version %d made; new data keys are wrapped with it", v), err); aerr != nil {
			return errors.Join(err, aerr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tenant %s: KEK rotated to version %d; rewrap the data keys under older versions: verbatim keys rewrap --tenant %s\n", *tenant, v, *tenant)
		return nil
	case "rewrap":
		st, err := keyops.Rewrap(ctx, keyops.RewrapConfig{Kafka: kcfg, Tenant: *tenant, Keys: rot, KeyManager: km.Kind(), Batch: *batch,
			Progress: func(s keyops.RewrapStats) {
				rate := float64(s.Rewrapped) / max(s.Elapsed.Seconds(), 1e-9)
				fmt.Fprintf(stderr, "\rrewrap: %d of %d keys rewrapped to version %d, %d to go, %.0f keys/s, about %s left ", s.Rewrapped, s.Rewrapped+s.Remaining,
					s.Latest, s.Remaining, rate, (time.Duration(float64(s.Remaining)/max(rate, 1e-9)) * time.Second).Round(time.Second))
			}})
		fmt.Fprintln(stderr)
		detail := fmt.Sprintf("%d data keys rewrapped to KEK version %d, %d were already, %d to go", st.Rewrapped, st.Latest, st.Already, st.Remaining)
		if aerr := operatorAudit(ctx, cl, *tenant, "key.rewrap", "key", *tenant, detail, err); aerr != nil {
			return errors.Join(err, aerr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tenant %s: %s, in %s; every data key is under version %d now: versions below it may be retired (verbatim keys retire --tenant %s --below %d)\n",
			*tenant, detail, st.Elapsed.Round(time.Millisecond), st.Latest, *tenant, st.Latest)
		return nil
	case "retire":
		if *below == 0 || *below > uint(latest) {
			return fmt.Errorf("keys retire: --below a version from 2 to the latest, %d", latest)
		}
		reg, err := keyops.Retire(ctx, kcfg, *tenant, rot, uint32(*below))
		detail := "KEK versions below " + strconv.FormatUint(uint64(*below), 10) + " retired: they no longer unwrap"
		if aerr := operatorAudit(ctx, cl, *tenant, "key.retire", "key", *tenant, detail, err); aerr != nil {
			return errors.Join(err, aerr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tenant %s: %s; all %d data keys are under newer ones\n", *tenant, detail, len(reg.Keys))
		return nil
	}
	return errors.New(use)
}

// runReencrypt is `verbatim keys reencrypt`: recordings whose data keys
// are suspected compromised sealed again under fresh keys, the old keys
// shredded; each recording audited, and the run.
func runReencrypt(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys reencrypt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	tenant := fs.String("tenant", "demo", "tenant whose recordings")
	var keyIDs, callIDs multiFlag
	fs.Var(&keyIDs, "key", "a recording data key suspected compromised (repeatable)")
	fs.Var(&callIDs, "call", "a call whose current recording to re-encrypt (repeatable)")
	reason := fs.String("reason", "", "why the keys are suspected, for the audit trail (required)")
	dryRun := fs.Bool("dry-run", false, "report what would be re-encrypted; change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keys reencrypt: unexpected argument %q", fs.Arg(0))
	}
	km, err := kf.manager()
	if err != nil {
		return err
	}
	store, _, err := sf.open(ctx)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	writeCl, err := kafka.client("verbatim-reencrypt", stderr, kgo.TransactionalID(fmt.Sprintf("verbatim-reencrypt-%s-%d", host, os.Getpid())))
	if err != nil {
		return err
	}
	defer writeCl.Close()
	auditCl, err := kafka.client("verbatim-reencrypt", stderr)
	if err != nil {
		return err
	}
	defer auditCl.Close()
	rep, err := processors.Reencrypt(ctx, processors.ReencryptConfig{Kafka: kafka.config("verbatim-reencrypt", stderr), Writer: &api.KafkaWriter{Client: writeCl},
		Tenant: *tenant, KeyIDs: keyIDs, CallIDs: callIDs, Reason: *reason, DryRun: *dryRun, Keys: km, Store: store, Actor: operator(),
		Progress: func(s processors.ReencryptStats) {
			fmt.Fprintf(stderr, "reencrypt: %d of %d recordings re-encrypted, %d skipped, %d failed, %d to go\n",
				s.Reencrypted, s.Selected, s.Skipped, s.Failed, s.Remaining)
		}})
	st := rep.Stats
	detail := fmt.Sprintf("run %s: %d recordings selected: %d re-encrypted (old keys shredded), %d skipped, %d failed", rep.RunID, st.Selected, st.Reencrypted, st.Skipped, st.Failed)
	if *dryRun {
		detail = fmt.Sprintf("dry run %s: %d recordings selected: %d to re-encrypt, %d skipped", rep.RunID, st.Selected, st.Remaining, st.Skipped)
	}
	if rep.RunID != "" {
		if aerr := operatorAudit(ctx, auditCl, *tenant, "key.reencrypt", "key", *tenant, *reason+": "+detail, err); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}
	if *asJSON && rep.RunID != "" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return errors.Join(err, jerr)
		}
		return err
	}
	if rep.RunID != "" {
		fmt.Fprintf(stdout, "tenant %s: %s\n", *tenant, detail)
		for _, r := range rep.Recordings {
			switch {
			case r.Skip != "":
				fmt.Fprintf(stdout, "  %s %s: skipped: %s\n", r.CallID, r.RecordingID, r.Skip)
			case r.Failure != "":
				fmt.Fprintf(stdout, "  %s %s: FAILED, left as it was: %s\n", r.CallID, r.RecordingID, r.Failure)
			case *dryRun:
				fmt.Fprintf(stdout, "  %s %s: would be sealed again; key %s would be shredded\n", r.CallID, r.RecordingID, r.OldKeyID)
			default:
				fmt.Fprintf(stdout, "  %s %s -> %s: %d objects under key %s; key %s shredded; %d old objects deleted, %d kept as ciphertext under lock, %d not deleted (logged)\n",
					r.CallID, r.RecordingID, r.NewRecordingID, len(r.Objects), r.NewKeyID, r.OldKeyID, len(r.OldDeleted), len(r.OldLocked), len(r.OldNotDeleted))
			}
		}
	}
	return err
}
