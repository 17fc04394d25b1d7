// Command verbatim is Verbatim's single binary: one subcommand per role.
// Only this package reads flags and environment variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/devstack"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/ops"
	"github.com/verbatimrec/verbatim/processors"
	auditlog "github.com/verbatimrec/verbatim/projections/audit"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
)

const usage = `usage: verbatim <command> [flags]

Commands:
  dev       run the embedded default: Kafka broker, object store and keyring
            in one process (ClickHouse optional); --check runs a self-check
  ingest    ingest pcap FILE...: record the SIP/RTP calls in captures;
            ingest live --interface IF: record from a network interface
  siprec    run the SIPREC recording server (RFC 7866): SBCs and PBXs fork
            calls to it (--listen udp:HOST:PORT, tcp:, tls:)
  process   assemble, encrypt and store the recordings (exactly once)
  reprocess --job NAME [--codec C] [--status S] [--dry-run]: record calls
            again from their raw media with this build; each new recording
            supersedes the old, which is kept
  project   project search: build the ClickHouse search tables from the topics;
            project audit: append the audit topic to each tenant's Merkle
            tree log, with signed checkpoints
  audit     key | verify --tenant T | prove EVENT-ID | prove-recording CALL-ID |
            consistency OLD NEW | check --key VKEY PROOF.json: the audit
            log's verifier key, its verification and its proofs
  play      play CALL-ID -o out.wav: fetch, verify and decrypt a recording
  api       serve the HTTPS API for signed-in users (OpenID Connect bearer
            tokens; search, call detail, playback with Range; audited)
  search    find calls by time, party (number or SIP URI) or call id
  completeness  --from DAY --to DAY [--party P]: per party and day, the
            calls signalled and how many were recorded complete, partial,
            failed or missing, with the reasons
  keys      status | rotate | rewrap | retire --below N (--tenant T): rotate
            a tenant's key-encryption key, rewrap its data keys to the new
            version (resumable), then retire the old versions;
            reencrypt (--key ID | --call ID)... --reason R [--dry-run]: seal
            recordings under fresh data keys and shred the suspected ones
  erasure   request --subject ID --reason R | proof REQUEST-ID: erase a data
            subject's calls where no retention or hold applies (GDPR Art. 17)
  hold      place | list | release HOLD | approve HOLD: legal holds; a
            release takes two operators
  expire    [--dry-run]: delete the recordings whose retention has ended
  retention apply --class KIND=VALUE=KEEP...: lock longer the calls of a
            tag, skill group, party or direction (never shorter)
  tenant    offboard --confirm T: destroy a tenant's key-encryption key,
            then its data keys, rows and objects, with a proof
  topics    list the v1 topic catalogue, or create the topics (--create)
  loadtest  -o load.pcap: write a capture of --calls concurrent calls
  version   print the version

Run 'verbatim <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "verbatim:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "ingest":
		return runIngest(ctx, args[1:], stdout, stderr)
	case "siprec":
		return runSIPREC(ctx, args[1:], stdout, stderr)
	case "process":
		return runProcess(ctx, args[1:], stdout, stderr)
	case "reprocess":
		return runReprocess(ctx, args[1:], stdout, stderr)
	case "play":
		return runPlay(ctx, args[1:], stdout, stderr)
	case "api":
		return runAPI(ctx, args[1:], stdout, stderr)
	case "project":
		return runProject(ctx, args[1:], stdout, stderr)
	case "search":
		return runSearch(ctx, args[1:], stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "keys":
		return runKeys(ctx, args[1:], stdout, stderr)
	case "completeness":
		return runCompleteness(ctx, args[1:], stdout, stderr)
	case "erasure", "hold", "expire", "retention", "tenant":
		return runLifecycle(ctx, args[0], args[1:], stdout, stderr)
	case "topics":
		return runTopics(ctx, args[1:], stdout, stderr)
	case "loadtest":
		return runLoadtest(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "verbatim " + bi.Main.Version + " " + s.Value
			}
		}
		return "verbatim " + bi.Main.Version
	}
	return "verbatim (unknown version)"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", envOr("VERBATIM_DATA", ".verbatim"), "data directory: broker log, objects, keyring (env VERBATIM_DATA)")
	port := fs.Int("kafka-port", 19092, "loopback port of the embedded Kafka broker (0: any free port)")
	chAddr := fs.String("clickhouse", os.Getenv("VERBATIM_CLICKHOUSE_ADDR"), "ClickHouse native address host:port, to migrate the search schema (env VERBATIM_CLICKHOUSE_ADDR; empty: no search)")
	check := fs.Bool("check", false, "run the self-check and exit instead of serving")
	roles := fs.String("roles", "process,project", "pipeline roles to run in this process: process (recordings), project (search, needs --clickhouse), audit (the audit log, needs --clickhouse), siprec (the SIPREC recording server), api (the HTTPS API and web page, needs --clickhouse, an OpenID provider and a certificate: source the local stack's env.sh); empty for none")
	var srs devSIPREC
	var da devAPI
	fs.StringVar(&da.listen, "api-listen", "127.0.0.1:18443", "HTTPS address of the api role")
	fs.StringVar(&da.publicURL, "api-public-url", os.Getenv("VERBATIM_PUBLIC_URL"), "URL of the api role's web page, for sign-in (env VERBATIM_PUBLIC_URL; empty: bearer tokens only)")
	fs.StringVar(&srs.listen, "siprec-listen", "udp:127.0.0.1:5060,tcp:127.0.0.1:5060", "SIP listeners of the siprec role, comma separated")
	fs.StringVar(&srs.ports, "siprec-rtp-ports", "20000-29999", "RTP port range of the siprec role")
	tenant := fs.String("tenant", "demo", "tenant for --check and of the siprec role's recordings")
	of := addOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	srs.tenant = *tenant
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	s, err := devstack.Start(ctx, devstack.Config{DataDir: *dataDir, KafkaPort: *port, Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(stdout, "Verbatim embedded default\n")
	fmt.Fprintf(stdout, "  kafka     %s (embedded, log in %s)\n", strings.Join(s.Brokers, ","), s.KafkaDir)
	fmt.Fprintf(stdout, "  objects   %s\n", s.ObjectsDir)
	fmt.Fprintf(stdout, "  keyring   %s (0600: back it up; losing it loses every recording)\n", s.KeyringPath)
	if *chAddr != "" {
		conn, db, err := search.Open(ctx, clickhouseConfig(*chAddr, ""))
		if err != nil {
			return err
		}
		n, err := search.Migrate(ctx, conn, db)
		conn.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  search    ClickHouse %s, database %s (%d migrations applied)\n", *chAddr, db, n)
	} else {
		fmt.Fprintf(stdout, "  search    off (pass --clickhouse host:port)\n")
	}
	if *check {
		fmt.Fprintln(stdout, "self-check:")
		if err := s.SelfCheck(ctx, stdout, *tenant); err != nil {
			return fmt.Errorf("self-check failed: %w", err)
		}
		fmt.Fprintln(stdout, "self-check passed")
		return nil
	}
	brokers := strings.Join(s.Brokers, ",")
	kafka := kafkaFlags{brokers: &brokers, metrics: new(prometheus.Registerer), embedded: true}
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	srv, ping, err := of.start(octx, "dev", kafka, "verbatim-dev", stderr)
	if err != nil {
		return err
	}
	done, stopped, err := startRoles(ctx, *roles, s, *chAddr, *dataDir, srs, da, devOps{srv: srv, ping: ping, kafka: kafka}, stdout, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "running; Ctrl-C to stop")
	select {
	case <-ctx.Done():
	case <-stopped: // a role failed: dev does not go on without it
		fmt.Fprintln(stdout, "a role stopped: stopping the others")
	}
	fmt.Fprintln(stdout, "stopping; flushing the broker log")
	return done()
}

// startRoles runs the pipeline roles against the embedded stack until ctx
// ends or one of them fails, which stops the others (stopped is closed
// then); the returned func waits for them and reports the failures.
func startRoles(ctx context.Context, roles string, s *devstack.Stack, chAddr, dataDir string, srs devSIPREC, da devAPI, do devOps, stdout, stderr io.Writer) (
	done func() error, stopped <-chan struct{}, err error) {
	ctx, stop := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	failed := func(err error) {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // stopped with the others, not a failure of its own
		}
		errs <- err
		stop()
	}
	kcfg := do.kafka.config("verbatim-dev", stderr)
	for _, role := range strings.Split(roles, ",") {
		switch strings.TrimSpace(role) {
		case "":
		case "process":
			spool := filepath.Join(dataDir, "spool")
			if err := os.MkdirAll(spool, 0o700); err != nil {
				return nil, nil, err
			}
			fmt.Fprintf(stdout, "  role      process: recordings into %s\n", s.ObjectsDir)
			wg.Add(1)
			cfg := processors.Config{Kafka: kcfg, Instance: "dev", Keys: s.Keys, Store: s.Store, SpoolDir: spool, Logger: warnLogger(stderr)}
			if do.srv != nil {
				var last atomic.Pointer[processors.Stats]
				last.Store(&processors.Stats{})
				processMetrics(do.srv, &last)
				cfg.Progress = func(st processors.Stats) { last.Store(&st) }
			}
			go func() { // stops with ctx; waited for by the returned func
				defer wg.Done()
				_, err := processors.Run(ctx, cfg)
				if err != nil {
					fmt.Fprintf(stderr, "dev: role process stopped: %v\n", err)
					failed(fmt.Errorf("process: %w", err))
				}
			}()
		case "project":
			if chAddr == "" {
				fmt.Fprintln(stdout, "  role      project: off (no --clickhouse)")
				continue
			}
			conn, db, err := search.Open(ctx, clickhouseConfig(chAddr, ""))
			if err != nil {
				return nil, nil, err
			}
			fmt.Fprintf(stdout, "  role      project: search tables in ClickHouse %s, database %s\n", chAddr, db)
			wg.Add(1)
			go func() { // stops with ctx; waited for by the returned func
				defer wg.Done()
				defer conn.Close()
				rc := search.RunConfig{Kafka: kcfg, Instance: "dev", Conn: conn, Database: db, Keys: s.Keys, Logger: warnLogger(stderr)}
				if do.srv != nil {
					var last atomic.Pointer[search.Stats]
					last.Store(&search.Stats{})
					do.srv.Check("clickhouse", conn.Ping)
					projectMetrics(ctx, do.srv, &last, kadm.NewClient(do.ping), "verbatim-project-search")
					rc.Progress, rc.ProgressEvery = func(st search.Stats) { last.Store(&st) }, time.Second
				}
				if _, err := search.Run(ctx, rc); err != nil {
					fmt.Fprintf(stderr, "dev: role project stopped: %v\n", err)
					failed(fmt.Errorf("project search: %w", err))
				}
			}()
		case "siprec":
			run, err := srs.start(ctx, s, stdout, stderr)
			if err != nil {
				return nil, nil, err
			}
			wg.Add(1)
			go func() { // stops with ctx; waited for by the returned func
				defer wg.Done()
				if err := run(); err != nil {
					fmt.Fprintf(stderr, "dev: role siprec stopped: %v\n", err)
					failed(fmt.Errorf("siprec: %w", err))
				}
			}()
		case "audit":
			if chAddr == "" {
				return nil, nil, errors.New("dev: role audit needs --clickhouse (the audit log's tables)")
			}
			conn, db, err := search.Open(ctx, clickhouseConfig(chAddr, ""))
			if err != nil {
				return nil, nil, err
			}
			fmt.Fprintf(stdout, "  role      audit: the audit log in ClickHouse %s, database %s, checkpoints in %s\n", chAddr, db, s.ObjectsDir)
			wg.Add(1)
			go func() { // stops with ctx; waited for by the returned func
				defer wg.Done()
				defer conn.Close()
				if _, err := auditlog.Run(ctx, auditlog.Config{Kafka: kcfg, Conn: conn, Database: db, Signer: s.Keys, Store: s.Store,
					Logger: warnLogger(stderr)}); err != nil && ctx.Err() == nil {
					fmt.Fprintf(stderr, "dev: role audit stopped: %v\n", err)
					failed(fmt.Errorf("project audit: %w", err))
				}
			}()
		case "api":
			if chAddr == "" {
				return nil, nil, errors.New("dev: role api needs --clickhouse (it searches the projection)")
			}
			args := []string{"api", "--listen", da.listen, "--brokers", strings.Join(s.Brokers, ","), "--keyring", s.KeyringPath,
				"--objects", s.ObjectsDir, "--clickhouse", chAddr, "--instance", "dev", "--public-url", da.publicURL}
			fmt.Fprintf(stdout, "  role      api: https://%s (issuer %s)\n", da.listen, os.Getenv("VERBATIM_OIDC_ISSUER"))
			wg.Add(1)
			go func() { // stops with ctx; waited for by the returned func
				defer wg.Done()
				if err := run(ctx, args, io.Discard, stderr); err != nil {
					fmt.Fprintf(stderr, "dev: role api stopped: %v\n", err)
					failed(fmt.Errorf("api: %w", err))
				}
			}()
		default:
			return nil, nil, fmt.Errorf("dev: unknown role %q (process, project, audit, siprec, api)", role)
		}
	}
	return func() error {
		wg.Wait()
		stop()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return errors.Join(all...)
	}, ctx.Done(), nil
}

// devOps is dev's operations endpoint (srv nil: none), the client of its
// readiness check, and the Kafka flags its roles' clients are made from.
type devOps struct {
	srv   *ops.Server
	ping  *kgo.Client
	kafka kafkaFlags
}

// devAPI configures the api role of `verbatim dev`; its issuer, client
// and certificate come from the environment, as for `verbatim api`.
type devAPI struct{ listen, publicURL string }

func runTopics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	create := fs.Bool("create", false, "create missing topics on the brokers")
	rf := fs.Int("replication-factor", 1, "replication factor for created topics (3 in production)")
	var grants []string
	fs.Func("grant", "ROLE=USER: give the SCRAM or certificate user USER the ACLs of ROLE ("+kafkaclient.RoleNames()+"), as the administrator; repeatable", func(v string) error {
		grants = append(grants, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	type grant struct {
		role kafkaclient.Role
		user string
	}
	var gs []grant
	for _, g := range grants {
		name, user, ok := strings.Cut(g, "=")
		if !ok || user == "" {
			return fmt.Errorf("--grant %q: want ROLE=USER", g)
		}
		r, err := kafkaclient.RoleNamed(name)
		if err != nil {
			return fmt.Errorf("--grant %q: %w", g, err)
		}
		gs = append(gs, grant{r, "User:" + strings.TrimPrefix(user, "User:")})
	}
	if *create || len(gs) > 0 {
		cl, err := kafka.client("verbatim-topics", stderr)
		if err != nil {
			return err
		}
		defer cl.Close()
		if *create {
			if err := kafkaclient.EnsureTopics(ctx, cl, schemas.Topics(), int16(*rf)); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "topics present on %s\n", *kafka.brokers)
		}
		for _, g := range gs {
			n, err := kafkaclient.Grant(ctx, kadm.NewClient(cl), g.role, g.user)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s holds the %d ACLs of role %s: %s\n", g.user, n, g.role.Name, g.role.Does)
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tKEY\tPARTITIONS\tCLEANUP\tRETENTION\tVALUE")
	for _, t := range schemas.Topics() {
		ret := "forever"
		if t.Retention > 0 {
			ret = t.Retention.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, t.Key, t.Partitions, t.Cleanup, ret, t.Message)
	}
	return tw.Flush()
}
