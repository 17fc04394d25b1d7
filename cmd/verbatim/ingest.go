package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/ingest"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/ops"
)

// keyFlags selects the key manager: the local keyring when --keyring is
// given, else Vault Transit when an address is configured, else the
// embedded default's keyring.
type keyFlags struct {
	fs                                                  *flag.FlagSet
	vaultAddr, vaultToken, vaultCA, keyring, tenantKeys *string
	vaultInsecure                                       *bool
}

func addKeyFlags(fs *flag.FlagSet) keyFlags {
	return keyFlags{
		fs:         fs,
		vaultAddr:  fs.String("vault-addr", os.Getenv("VERBATIM_VAULT_ADDR"), "Vault address for Transit keys (env VERBATIM_VAULT_ADDR); empty: use --keyring"),
		vaultToken: fs.String("vault-token-file", os.Getenv("VERBATIM_VAULT_TOKEN_FILE"), "file (0600) of the Vault token (env VERBATIM_VAULT_TOKEN_FILE); default: env VERBATIM_VAULT_TOKEN. Never on the command line, where ps shows it"),
		vaultCA:    fs.String("vault-ca", os.Getenv("VERBATIM_VAULT_CA"), "PEM file of the CA of Vault's certificate, if not a public one (env VERBATIM_VAULT_CA)"),
		vaultInsecure: fs.Bool("vault-insecure", os.Getenv("VERBATIM_VAULT_INSECURE") == "true",
			"allow plain HTTP to a Vault that is not on loopback: its token crosses the network in clear (env VERBATIM_VAULT_INSECURE=true)"),
		keyring:    fs.String("keyring", filepath.Join(envOr("VERBATIM_DATA", ".verbatim"), "keyring.json"), "local keyring file, when no Vault is configured"),
		tenantKeys: fs.String("tenant-keys", os.Getenv("VERBATIM_TENANT_KEYS"), `JSON file of the tenants whose KEK is in their own Vault (bring your own key): [{"tenant": "acme", "vault_addr": "https://...", "mount": "transit", "token_file": "/run/secrets/acme"}] (env VERBATIM_TENANT_KEYS)`),
	}
}

func (k keyFlags) manager() (keys.Manager, error) {
	m, err := k.baseManager()
	if err != nil || *k.tenantKeys == "" {
		return m, err
	}
	return keys.LoadTenantKeys(*k.tenantKeys, m)
}

func (k keyFlags) baseManager() (keys.Manager, error) {
	explicitKeyring := false
	k.fs.Visit(func(f *flag.Flag) { explicitKeyring = explicitKeyring || f.Name == "keyring" })
	if *k.vaultAddr != "" && !explicitKeyring {
		tok := os.Getenv("VERBATIM_VAULT_TOKEN")
		if *k.vaultToken != "" {
			var err error
			if tok, err = keys.ReadSecretFile(*k.vaultToken, "--vault-token-file"); err != nil {
				return nil, err
			}
		}
		return keys.NewVault(keys.VaultConfig{Address: *k.vaultAddr, Token: tok, CAFile: *k.vaultCA, Insecure: *k.vaultInsecure})
	}
	return keys.OpenKeyring(*k.keyring)
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "live" {
		return runIngestLive(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "pcap" {
		return errors.New("usage: verbatim ingest pcap [flags] FILE... | verbatim ingest live --interface IF [flags]")
	}
	fs := flag.NewFlagSet("ingest pcap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inf := addIngestFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("ingest pcap: no capture file given")
	}
	base, cl, err := inf.open(stderr)
	if err != nil {
		return err
	}
	defer cl.Close()

	var failed int
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		cfg := base
		cfg.Source = "verbatim-ingest/" + filepath.Base(name)
		source := "pcap:" + filepath.Base(name)
		if err := operatorAudit(ctx, cl, cfg.Tenant, "capture.started", "capture", source, "", nil); err != nil {
			f.Close()
			return err
		}
		cfg.Progress = func(r ingest.Report) {
			fmt.Fprintf(stderr, "\r%s: %d packets, %d SIP messages, %.0f packets/s", name, r.Pcap.Frames, r.SIP.Messages,
				float64(r.Pcap.Frames)/max(r.Elapsed.Seconds(), 1e-9))
		}
		rep, err := ingest.Pcap(ctx, cfg, f)
		f.Close()
		fmt.Fprintln(stderr)
		if aerr := operatorAudit(ctx, cl, cfg.Tenant, "capture.stopped", "capture", source,
			fmt.Sprintf("%d calls, %d RTP packets", rep.Calls, rep.RTPPackets), err); aerr != nil {
			return aerr
		}
		damaged := errors.Is(err, ingest.ErrCaptureDamaged)
		if err != nil && !damaged {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s: %d calls, %d RTP packets in %d batches\n", name, rep.Calls, rep.RTPPackets, rep.Batches)
		if rep.Pcap.Damaged > 0 {
			fmt.Fprintf(stdout, "  warning: %d damaged stretches of the file (%d bytes) skipped; reading went on at the next valid record (first: %s)\n",
				rep.Pcap.Damaged, rep.Pcap.DamagedBytes, rep.Pcap.FirstDamage)
		}
		if rep.Truncated {
			fmt.Fprintf(stdout, "  warning: %s; everything before it was recorded\n", rep.TruncatedAt)
		}
		printWarnings(stdout, rep)
		if damaged {
			// Recorded, and the calls open then say so in their ledgers;
			// still a failure: input was lost.
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d captures failed", failed, fs.NArg())
	}
	return nil
}

// printWarnings says, with a count and the last reason, everything a
// capture skipped or lost.
func printWarnings(w io.Writer, rep ingest.Report) {
	warn := func(n uint64, what, detail string) {
		if n > 0 {
			fmt.Fprintf(w, "  warning: %d %s%s\n", n, what, detail)
		}
	}
	warn(rep.KernelDrops, "frames dropped by the kernel before Verbatim read them: calls in that time may have gaps", "")
	warn(rep.SIP.Malformed, "malformed SIP messages skipped", lastErr(rep.LastSIPError))
	warn(rep.InvitesExpired, "calls never answered, ended after --invite-timeout without SIP or RTP", "")
	warn(rep.BadRTP, "packets on media ports that are not RTP skipped", lastErr(rep.LastRTPError))
	warn(rep.Pcap.Malformed, "undecodable frames skipped", lastErr(rep.Pcap.LastMalformed))
	warn(rep.Pcap.FragmentsLost, "IP datagrams lost: some of their fragments were not captured", "")
	warn(rep.SIPOverTCP.GapBytes, "bytes of SIP over TCP never captured (the messages they were in are lost)", "")
	warn(rep.SIPOverTCP.DiscardedBytes, "bytes of SIP over TCP that framed no message, skipped", "")
	warn(rep.SRTPAuthFailures, "SRTP packets failed authentication (forged or corrupted) and were dropped", lastErr(rep.LastSRTPError))
	warn(rep.SRTPReplayed, "SRTP packets were replays and were dropped", "")
	warn(rep.StrayPackets, "RTP packets of sources that never sent two in a row on a stream (stray, e.g. a spray of random SSRCs) counted, not recorded", "")
	warn(rep.ZRTPPackets, "ZRTP packets seen: those calls' media is encrypted with keys no capture has, and is kept encrypted", "")
	warn(rep.EncryptedFlows, "streams found by their RTP carry SRTP authentication tags and no key was given (--srtp-key-file): kept encrypted, labelled so", "")
	warn(rep.UnmatchedTCP, "TCP segments that are not SIP (SIP over TLS cannot be read) skipped", "")
	warn(rep.BadRTCP, "RTCP packets that do not parse skipped", lastErr(rep.LastRTCPError))
}

// ingestFlags are the flags `ingest pcap` and `ingest live` share.
type ingestFlags struct {
	kafka    kafkaFlags
	keys     keyFlags
	tenant   *string
	timeout  *time.Duration
	invite   *time.Duration
	deliver  *time.Duration
	pci      *bool
	srtpKeys []ingest.SRTPKey
	local    *string
}

func addIngestFlags(fs *flag.FlagSet) *ingestFlags {
	f := &ingestFlags{
		kafka:   addKafkaFlags(fs),
		tenant:  fs.String("tenant", envOr("VERBATIM_TENANT", "demo"), "tenant that owns the recordings"),
		timeout: fs.Duration("rtp-timeout", 30*time.Second, "end a call without BYE after this long without SIP or RTP"),
		invite:  fs.Duration("invite-timeout", 3*time.Minute, "end a call never answered after this long without SIP or RTP (RFC 3261 Timer C): a flood of unanswered INVITEs is not kept"),
		deliver: fs.Duration("kafka-timeout", 2*time.Minute, "fail when Kafka has not accepted a record within this long"),
		pci:     fs.Bool("pci", false, "PCI DSS mode: DTMF sent in SIP INFO is stored masked (run verbatim process with --pci-tenants too)"),
		keys:    addKeyFlags(fs),
		local: fs.String("local", os.Getenv("VERBATIM_LOCAL"), "the organisation's own SIP domains and networks, comma separated (env VERBATIM_LOCAL; e.g. bank.example,10.0.0.0/8): "+
			"a call is inbound, outbound or internal by which of its parties are local"),
	}
	fs.Func("srtp-key-file", "file (0600) of SRTP master keys known out of band, for RTP without captured SDP: one `[ADDR:PORT=]SUITE:inline:BASE64` a line "+
		"(e.g. AES_CM_128_HMAC_SHA1_80:inline:...; # starts a comment; repeatable). Never on the command line, where ps shows it", func(path string) error {
		text, err := keys.ReadSecretFile(path, "--srtp-key-file")
		if err != nil {
			return err
		}
		for i, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, err := ingest.ParseSRTPKey(line)
			if err != nil {
				return fmt.Errorf("%s, line %d: %w", path, i+1, err)
			}
			f.srtpKeys = append(f.srtpKeys, k)
		}
		return nil
	})
	fs.Func("srtp-key", "no longer taken: a key on the command line is visible to every user in ps (use --srtp-key-file)", func(string) error {
		return errors.New("an SRTP key on the command line is visible to every user of the machine in ps: put it in a file of mode 0600 and pass --srtp-key-file FILE")
	})
	return f
}

// open returns the ingest configuration the flags give and the Kafka
// client it produces with; the caller closes the client.
func (f *ingestFlags) open(stderr io.Writer) (ingest.Config, *kgo.Client, error) {
	local, err := ingest.ParseLocal(*f.local)
	if err != nil {
		return ingest.Config{}, nil, fmt.Errorf("--local: %w", err)
	}
	km, err := f.keys.manager()
	if err != nil {
		return ingest.Config{}, nil, err
	}
	cl, err := f.kafka.client("verbatim-ingest", stderr, kgo.RecordDeliveryTimeout(*f.deliver))
	if err != nil {
		return ingest.Config{}, nil, err
	}
	return ingest.Config{Tenant: *f.tenant, Keys: km, Producer: cl, RTPTimeout: *f.timeout, InviteTimeout: *f.invite, Logger: warnLogger(stderr),
		SRTPKeys: f.srtpKeys, PCI: *f.pci, Local: local}, cl, nil
}

func lastErr(s string) string {
	if s == "" {
		return ""
	}
	return " (last: " + s + ")"
}

// compileFilter compiles a tcpdump expression into the classic BPF program
// the capture socket takes, with tcpdump itself: Verbatim does not link
// libpcap, and tcpdump's compiler is the one users know the syntax of.
func compileFilter(ctx context.Context, iface, expr string) (string, error) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		return "", fmt.Errorf("ingest live: --filter needs tcpdump to compile %q (apt-get install tcpdump), or pass a compiled program with --filter-bpf", expr)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tcpdump, "-ddd", "-i", iface, expr)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ingest live: --filter %q: %s", expr, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// runIngestLive records from a network interface until interrupted.
func runIngestLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ingest live", flag.ContinueOnError)
	fs.SetOutput(stderr)
	iface := fs.String("interface", "", "network interface to capture on, e.g. a mirror port (required; needs CAP_NET_RAW)")
	expr := fs.String("filter", "", "kernel filter as a tcpdump expression, e.g. \"udp or tcp port 5060\" (compiled by tcpdump, which must be installed; default: everything)")
	filter := fs.String("filter-bpf", "", "kernel filter already compiled, in `tcpdump -ddd` form (instead of --filter, where tcpdump is not installed)")
	inf := addIngestFlags(fs)
	of := addOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *iface == "" {
		return errors.New("ingest live: --interface is required")
	}
	if *expr != "" {
		if *filter != "" {
			return errors.New("ingest live: --filter or --filter-bpf, not both")
		}
		var err error
		if *filter, err = compileFilter(ctx, *iface, *expr); err != nil {
			return err
		}
	}
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	opsSrv, _, err := of.start(octx, "ingest", inf.kafka, "verbatim-ingest", stderr)
	if err != nil {
		return err
	}
	cfg, cl, err := inf.open(stderr)
	if err != nil {
		return err
	}
	defer cl.Close()
	cfg.Source, cfg.ProgressEvery = "verbatim-ingest/live:"+*iface, 1000
	var last atomic.Pointer[ingest.Report]
	last.Store(&ingest.Report{})
	if opsSrv != nil {
		ingestMetrics(opsSrv, &last)
	}
	if err := operatorAudit(ctx, cl, cfg.Tenant, "capture.started", "capture", "interface:"+*iface, *expr, nil); err != nil {
		return err
	}
	cfg.Progress = func(r ingest.Report) {
		last.Store(&r)
		fmt.Fprintf(stderr, "\r%s: %d packets, %d SIP messages, %d calls, %d kernel drops ", *iface, r.Pcap.Frames, r.SIP.Messages, r.Calls, r.KernelDrops)
	}
	rep, err := ingest.Live(ctx, cfg, ingest.LiveConfig{Interface: *iface, Filter: *filter,
		Ready: func() { fmt.Fprintf(stderr, "capturing on %s; Ctrl-C to stop\n", *iface) }})
	fmt.Fprintln(stderr)
	fmt.Fprintf(stdout, "%s: %d calls, %d RTP packets in %d batches, %d frames dropped by the kernel\n", *iface, rep.Calls, rep.RTPPackets, rep.Batches, rep.KernelDrops)
	printWarnings(stdout, rep)
	return errors.Join(err, operatorAudit(ctx, cl, cfg.Tenant, "capture.stopped", "capture", "interface:"+*iface,
		fmt.Sprintf("%d calls, %d RTP packets, %d frames dropped by the kernel", rep.Calls, rep.RTPPackets, rep.KernelDrops), err))
}

// ingestMetrics exports a live capture's counts, as its last report
// (every 1,000 frames) left them.
func ingestMetrics(srv *ops.Server, last *atomic.Pointer[ingest.Report]) {
	ops.Totals(srv, "ingest", last, []ops.Total[ingest.Report]{
		{Name: "frames_total", Help: "Frames captured.", Value: func(r *ingest.Report) uint64 { return uint64(r.Pcap.Frames) }},
		{Name: "kernel_drops_total", Help: "Frames the kernel dropped before the capture read them.", Value: func(r *ingest.Report) uint64 { return r.KernelDrops }},
		{Name: "sip_messages_total", Help: "SIP messages read.", Value: func(r *ingest.Report) uint64 { return uint64(r.SIP.Messages) }},
		{Name: "rtp_packets_total", Help: "RTP packets batched for the processor.", Value: func(r *ingest.Report) uint64 { return r.RTPPackets }},
		{Name: "batches_total", Help: "PacketBatch records produced.", Value: func(r *ingest.Report) uint64 { return r.Batches }},
		{Name: "srtp_auth_failures_total", Help: "SRTP packets dropped: authentication failed (forged or corrupted).", Value: func(r *ingest.Report) uint64 { return r.SRTPAuthFailures }},
		{Name: "srtp_replayed_total", Help: "SRTP packets dropped: replayed.", Value: func(r *ingest.Report) uint64 { return r.SRTPReplayed }},
		{Name: "bad_rtp_total", Help: "Packets on a known media port that are not RTP.", Value: func(r *ingest.Report) uint64 { return r.BadRTP }},
	})
	srv.CounterFunc("ingest", "calls_total", "Calls the capture found.", func() float64 { return float64(last.Load().Calls) })
}
