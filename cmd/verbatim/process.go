package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/ops"
	"github.com/verbatimrec/verbatim/processors"
)

// storeFlags choose the recordings store: S3 when an endpoint is
// configured (credentials from the environment only), else the embedded
// default's directory. An explicit --objects wins.
type storeFlags struct {
	fs                  *flag.FlagSet
	objects, s3, bucket *string
	insecure            *bool
}

func addStoreFlags(fs *flag.FlagSet) storeFlags {
	return storeFlags{
		fs:       fs,
		objects:  fs.String("objects", filepath.Join(envOr("VERBATIM_DATA", ".verbatim"), "objects"), "recordings directory, when no S3 endpoint is configured"),
		s3:       fs.String("s3-endpoint", os.Getenv("VERBATIM_S3_ENDPOINT"), "S3 endpoint host:port (env VERBATIM_S3_ENDPOINT; keys from VERBATIM_S3_ACCESS_KEY and VERBATIM_S3_SECRET_KEY; its CA, if not a public one, from VERBATIM_S3_CA)"),
		bucket:   fs.String("s3-bucket", envOr("VERBATIM_S3_BUCKET", "verbatim-recordings"), "S3 bucket, with object lock (env VERBATIM_S3_BUCKET)"),
		insecure: fs.Bool("s3-insecure", os.Getenv("VERBATIM_S3_INSECURE") == "true", "plain HTTP to S3, for a loopback dev stack only (env VERBATIM_S3_INSECURE=true)"),
	}
}

func (s storeFlags) open(ctx context.Context) (objstore.Store, string, error) {
	explicit := false
	s.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "objects" })
	if *s.s3 == "" || explicit {
		st, err := objstore.NewFS(*s.objects)
		return st, "directory " + *s.objects, err
	}
	st, err := objstore.NewS3(ctx, objstore.S3Config{Endpoint: *s.s3, Bucket: *s.bucket, Insecure: *s.insecure, CAFile: os.Getenv("VERBATIM_S3_CA"),
		AccessKey: os.Getenv("VERBATIM_S3_ACCESS_KEY"), SecretKey: os.Getenv("VERBATIM_S3_SECRET_KEY")})
	return st, "s3://" + *s.bucket + " at " + *s.s3, err
}

// pciTenantsFunc reads --pci-tenants: tenants, comma separated, or *.
func pciTenantsFunc(list string) func(tenant string) bool {
	if list == "" {
		return nil
	}
	pci := map[string]bool{}
	for _, t := range strings.Split(list, ",") {
		pci[strings.TrimSpace(t)] = true
	}
	return func(tenant string) bool { return pci["*"] || pci[tenant] }
}

func runProcess(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("process", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kafka := addKafkaFlags(fs)
	group := fs.String("group", "verbatim-process", "consumer group")
	host, _ := os.Hostname()
	instance := fs.String("instance", host, "name of this processor, stable across its restarts and unique in the group (its static member and transactional id)")
	spool := fs.String("spool", os.TempDir(), "directory for open calls' media (sealed); the instance's is SPOOL/verbatim-process-INSTANCE, and what a crashed run left there is reclaimed at the next start")
	idle := fs.Bool("exit-when-idle", false, "exit once the group has read the media topic to its end offsets (everything written before is recorded or checkpointed); default: run until stopped")
	quiet := fs.Bool("quiet", false, "no progress line")
	maxPoll := fs.Int("max-poll-records", 1000, "at most this many media records per transaction")
	tenants := fs.String("tenants", "", "record only these tenants, comma separated (a processor group per tenant); default: all")
	pciTenants := fs.String("pci-tenants", os.Getenv("VERBATIM_PCI_TENANTS"), "tenants recorded in PCI DSS mode, comma separated, or * for all (env VERBATIM_PCI_TENANTS): DTMF stored masked, tones silenced, no raw media kept")
	comfortNoise := fs.String("comfort-noise", "generate", "RFC 3389 comfort-noise spans: generate (the noise the packets describe, as the listener heard it) or silence")
	retention := fs.String("retention", os.Getenv("VERBATIM_RETENTION"), "how long recordings and raw media are locked (object lock, compliance mode), per tenant: TENANT=DAYSd or TENANT=DURATION, comma separated, * for every other tenant, e.g. \"demo=2557d,*=365d\" (env VERBATIM_RETENTION); empty: not locked")
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	of := addOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("process: unexpected argument %q", fs.Arg(0))
	}
	retain, err := parseRetention(*retention)
	if err != nil {
		return fmt.Errorf("process: --retention: %w", err)
	}
	if *comfortNoise != "generate" && *comfortNoise != "silence" {
		return fmt.Errorf("process: --comfort-noise is generate or silence, not %q", *comfortNoise)
	}
	if *instance == "" {
		return errors.New("process: --instance is required (no host name)")
	}
	km, err := kf.manager()
	if err != nil {
		return err
	}
	store, where, err := sf.open(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "process: recordings to %s\n", where)
	cfg := processors.Config{
		Kafka: kafka.config("verbatim-process", stderr),
		Group: *group, Instance: *instance, Keys: km, Store: store, SpoolDir: *spool,
		ExitWhenCaughtUp: *idle, Logger: warnLogger(stderr), MaxPollRecords: *maxPoll,
		SilentComfortNoise: *comfortNoise == "silence", Retention: retain,
	}
	if *tenants != "" {
		for _, t := range strings.Split(*tenants, ",") {
			cfg.Tenants = append(cfg.Tenants, strings.TrimSpace(t))
		}
	}
	cfg.PCI = pciTenantsFunc(*pciTenants)
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	srv, _, err := of.start(octx, "process", kafka, "verbatim-process", stderr)
	if err != nil {
		return err
	}
	cfg.Kafka = kafka.config("verbatim-process", stderr) // with the endpoint's metrics
	var last atomic.Pointer[processors.Stats]
	last.Store(&processors.Stats{})
	if srv != nil {
		processMetrics(srv, &last)
	}
	cfg.Progress = func(s processors.Stats) {
		last.Store(&s)
		if !*quiet {
			fmt.Fprintf(stderr, "\rprocess: %d media records, %d recordings stored, %d failed, %d calls open ", s.Records, s.Recorded, s.Failed, s.Open)
		}
	}
	st, err := processors.Run(ctx, cfg)
	if !*quiet {
		fmt.Fprintln(stderr)
	}
	fmt.Fprintf(stdout, "process: %d recordings stored, %d failed, %d calls without media, %d calls still open, %d media records (%d duplicates, %d rejected, %d read again to rebuild open calls)\n",
		st.Recorded, st.Failed, st.NoMedia, st.Open, st.Records, st.Duplicates, st.Rejected, st.Replayed)
	if st.ReclaimedFiles > 0 {
		fmt.Fprintf(stdout, "  reclaimed %d spool files (%d bytes) a crashed run of this instance left\n", st.ReclaimedFiles, st.ReclaimedBytes)
	}
	return err
}

// processMetrics exports a processor's running totals, as its last
// transaction left them.
func processMetrics(srv *ops.Server, last *atomic.Pointer[processors.Stats]) {
	ops.Totals(srv, "process", last, []ops.Total[processors.Stats]{
		{Name: "media_records_total", Help: "Media records consumed in committed transactions.", Value: func(s *processors.Stats) uint64 { return s.Records }},
		{Name: "batches_total", Help: "PacketBatch records spooled.", Value: func(s *processors.Stats) uint64 { return s.Batches }},
		{Name: "duplicate_batches_total", Help: "Batches seen before (an ingest run repeated).", Value: func(s *processors.Stats) uint64 { return s.Duplicates }},
		{Name: "recordings_stored_total", Help: "Recordings stored and announced.", Value: func(s *processors.Stats) uint64 { return s.Recorded }},
		{Name: "recordings_failed_total", Help: "Calls announced as failed (their raw media stored).", Value: func(s *processors.Stats) uint64 { return s.Failed }},
		{Name: "calls_without_media_total", Help: "Calls that ended without any media.", Value: func(s *processors.Stats) uint64 { return s.NoMedia }},
		{Name: "records_rejected_total", Help: "Records that could not be used.", Value: func(s *processors.Stats) uint64 { return s.Rejected }},
		{Name: "records_replayed_total", Help: "Records read again to rebuild open calls.", Value: func(s *processors.Stats) uint64 { return s.Replayed }},
		{Name: "transactions_aborted_total", Help: "Transactions aborted (a rebalance) and redone.", Value: func(s *processors.Stats) uint64 { return s.Aborted }},
	})
	srv.GaugeFunc("process", "open_calls", "Calls whose media is arriving.", func() float64 { return float64(last.Load().Open) })
}

// parseKeep reads a retention: days (2557d) or a Go duration (87600h).
func parseKeep(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 100*366 {
			return 0, fmt.Errorf("%q: a number of days up to 36600", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: days (2557d) or a duration (87600h)", v)
	}
	return d, nil
}

// parseRetention reads "demo=2557d,acme=87600h,*=365d": per tenant, how
// long its recordings are locked; * for the others. Empty: nil (none).
func parseRetention(s string) (func(tenant string) time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	byTenant := map[string]time.Duration{}
	for _, part := range strings.Split(s, ",") {
		tenant, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || tenant == "" {
			return nil, fmt.Errorf("%q is not TENANT=DURATION", part)
		}
		if tenant != "*" && !auth.ValidTenant(tenant) {
			return nil, fmt.Errorf("%q is not a tenant", tenant)
		}
		if _, dup := byTenant[tenant]; dup {
			return nil, fmt.Errorf("tenant %s given twice", tenant)
		}
		d, err := parseKeep(v)
		if err != nil {
			return nil, err
		}
		byTenant[tenant] = d
	}
	return func(tenant string) time.Duration {
		if d, ok := byTenant[tenant]; ok {
			return d
		}
		return byTenant["*"]
	}, nil
}
