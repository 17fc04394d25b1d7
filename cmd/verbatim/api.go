package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/oauth2"

	"github.com/verbatimrec/verbatim/api"
	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/playback"
	"github.com/verbatimrec/verbatim/processors/lifecycle"
	"github.com/verbatimrec/verbatim/schemas"
)

// claimFlag parses "path" or "path:prefix" ("groups:tenant:").
func claimFlag(s string) auth.Claim {
	path, prefix, _ := strings.Cut(s, ":")
	return auth.Claim{Path: path, Prefix: prefix}
}

// openPlayback opens what decrypting recordings needs: the key manager,
// the store and a key registry following the keys topic (closed by the
// returned func).
func openPlayback(ctx context.Context, kafka kafkaFlags, kf keyFlags, sf storeFlags, clientID string, stderr io.Writer) (*playback.Opener, func(), error) {
	km, err := kf.manager()
	if err != nil {
		return nil, nil, err
	}
	store, _, err := sf.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	cl, err := kafka.client(clientID, stderr, keyreg.ConsumeOpts()...)
	if err != nil {
		return nil, nil, err
	}
	reg := keyreg.Start(cl)
	return &playback.Opener{Keys: km, Store: store, Registry: reg}, reg.Close, nil
}

// runAPI is `verbatim api`: the HTTPS API for signed-in users.
func runAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:18443", "HTTPS address to serve on")
	cert := fs.String("tls-cert", os.Getenv("VERBATIM_TLS_CERT"), "server certificate, PEM (env VERBATIM_TLS_CERT)")
	key := fs.String("tls-key", os.Getenv("VERBATIM_TLS_KEY"), "its private key, PEM (env VERBATIM_TLS_KEY)")
	issuer := fs.String("oidc-issuer", os.Getenv("VERBATIM_OIDC_ISSUER"), "OpenID Connect issuer whose ID tokens are accepted (env VERBATIM_OIDC_ISSUER)")
	audience := fs.String("oidc-audience", os.Getenv("VERBATIM_OIDC_CLIENT_ID"), "client ids a token may be issued to, comma separated (env VERBATIM_OIDC_CLIENT_ID)")
	issuerCA := fs.String("oidc-ca", os.Getenv("VERBATIM_TLS_CA"), "CA of the issuer's certificate, PEM, if not a public one (env VERBATIM_TLS_CA)")
	tenantClaim := fs.String("tenant-claim", "groups:tenant:", "claim carrying the tenant, as path[:prefix] (Dex in the local stack: groups:tenant:)")
	rolesClaim := fs.String("roles-claim", "groups:role:", "claim carrying the roles, path[:prefix] (Entra ID: roles; Keycloak: realm_access.roles)")
	groupsClaim := fs.String("groups-claim", "groups:group:", "claim carrying the groups, path[:prefix]")
	partiesClaim := fs.String("parties-claim", "groups:party:", "claim carrying the numbers or SIP URIs of a user's own calls, path[:prefix]")
	host, _ := os.Hostname()
	instance := fs.String("instance", host, "name of this API server, stable across its restarts and unique among them (its Kafka transactional id is verbatim-api-INSTANCE)")
	serviceCA := fs.String("service-ca", "", "CA (PEM) of the client certificates of service accounts (a CTI integration); with --service-accounts")
	serviceAccounts := fs.String("service-accounts", "", `JSON list of service accounts: [{"name": "CERTIFICATE CN", "tenant": "demo", "roles": ["service"]}]`)
	publicURL := fs.String("public-url", "", "the URL people open for the web page, e.g. https://127.0.0.1:18443 (its /auth/callback must be a redirect URI of the client); empty: no web sign-in, bearer tokens only. The client secret comes from the environment only (VERBATIM_OIDC_CLIENT_SECRET)")
	sessionKeyFile := fs.String("session-key-file", os.Getenv("VERBATIM_SESSION_KEY_FILE"), "file (0600) of the key sealing web sessions, 64 hex digits, shared by the API servers behind one address (env VERBATIM_SESSION_KEY_FILE); empty: a key of this process, so sessions end when it stops")
	spool := fs.String("spool", os.TempDir(), "directory for a recording while it is decrypted and served (deleted at once: only the open file remains)")
	kafka := addKafkaFlags(fs)
	ch := addClickHouseFlags(fs)
	kf := addKeyFlags(fs)
	sf := addStoreFlags(fs)
	of := addOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("api: unexpected argument %q", fs.Arg(0))
	}
	if *cert == "" || *key == "" {
		return errors.New("api: --tls-cert and --tls-key are required: the API is served over HTTPS only (the local stack makes them: source .stack/env.sh)")
	}
	if *issuer == "" || len(list(*audience)) == 0 {
		return errors.New("api: --oidc-issuer and --oidc-audience are required: nobody can sign in otherwise")
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return fmt.Errorf("api: TLS: %w", err)
	}
	verifier, err := auth.NewVerifier(ctx, auth.Config{Issuer: *issuer, Audiences: list(*audience), CAFile: *issuerCA,
		Tenant: claimFlag(*tenantClaim), Roles: claimFlag(*rolesClaim), Groups: claimFlag(*groupsClaim), Parties: claimFlag(*partiesClaim)})
	if err != nil {
		return err
	}
	conn, db, err := ch.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	octx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	opsSrv, _, err := of.start(octx, "api", kafka, "verbatim-api", stderr)
	if err != nil {
		return err
	}
	var metrics prometheus.Registerer
	if opsSrv != nil {
		opsSrv.Check("clickhouse", conn.Ping)
		metrics = opsSrv.Registry
	}
	opener, closeOpener, err := openPlayback(ctx, kafka, kf, sf, "verbatim-api-keys", stderr)
	if err != nil {
		return err
	}
	defer closeOpener()
	policyCl, err := kafka.client("verbatim-api-policies", stderr, api.PolicyConsumeOpts()...)
	if err != nil {
		return err
	}
	policies := api.StartPolicies(policyCl)
	defer policies.Close()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = policies.Sync(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("api: the group policies (%s) could not be read (are the topics created? verbatim topics --create): %w", schemas.TopicPolicy, err)
	}
	auditCl, err := kafka.client("verbatim-api", stderr)
	if err != nil {
		return err
	}
	defer auditCl.Close()
	if *instance == "" {
		return errors.New("api: --instance is required (no host name)")
	}
	writeCl, err := kafka.client("verbatim-api", stderr, kgo.TransactionalID("verbatim-api-"+*instance))
	if err != nil {
		return err
	}
	defer writeCl.Close()
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	var accounts map[string]api.ServiceAccount
	if (*serviceCA == "") != (*serviceAccounts == "") {
		return errors.New("api: --service-ca and --service-accounts go together")
	}
	if *serviceCA != "" {
		pool, err := loadCAPool(*serviceCA)
		if err != nil {
			return fmt.Errorf("api: --service-ca: %w", err)
		}
		if accounts, err = api.LoadServiceAccounts(*serviceAccounts); err != nil {
			return err
		}
		// Asked for, never required: people come with tokens.
		tlsConfig.ClientAuth, tlsConfig.ClientCAs = tls.VerifyClientCertIfGiven, pool
	}
	var web *api.WebConfig
	if *publicURL != "" {
		secret := os.Getenv("VERBATIM_OIDC_CLIENT_SECRET")
		if secret == "" {
			return errors.New("api: --public-url needs the client's secret in VERBATIM_OIDC_CLIENT_SECRET (never on the command line)")
		}
		var sessionKey []byte
		if *sessionKeyFile != "" {
			if sessionKey, err = readSessionKey(*sessionKeyFile); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(stderr, "api: no --session-key-file: web sessions are sealed with a key of this process, and end when it stops")
		}
		web = &api.WebConfig{HTTPClient: verifier.HTTPClient(), SessionKey: sessionKey, OAuth2: oauth2.Config{ClientID: list(*audience)[0], ClientSecret: secret,
			Endpoint: verifier.Endpoint(), RedirectURL: strings.TrimSuffix(*publicURL, "/") + "/auth/callback",
			Scopes: []string{"openid", "email", "profile", "groups"}}}
	}
	writer := &api.KafkaWriter{Client: writeCl}
	lcCl, err := kafka.client("verbatim-api-lifecycle", stderr, lifecycle.ConsumeOpts()...)
	if err != nil {
		return err
	}
	lcReg := lifecycle.StartRegistry(lcCl)
	defer lcReg.Close()
	lc, err := lifecycle.New(lifecycle.Config{Kafka: kafka.config("verbatim-api-lifecycle", stderr), Writer: writer, Registry: lcReg,
		Conn: conn, Database: db, Store: opener.Store, Producer: "verbatim-api"})
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{Web: web, ServiceAccounts: accounts, Verifier: verifier, Conn: conn, Database: db,
		Playback: opener, Audit: api.KafkaAuditor{Client: auditCl}, Writer: writer, Lifecycle: lc,
		Policies: policies, SpoolDir: *spool, Logger: warnLogger(stderr), Metrics: metrics})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, TLSConfig: tlsConfig}
	fmt.Fprintf(stderr, "api: listening on https://%s (issuer %s, audience %s, database %s)\n", ln.Addr(), *issuer, *audience, db)
	done := make(chan error, 1)
	go func() { done <- hs.ServeTLS(ln, "", "") }() // joined below
	select {
	case err := <-done:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	<-done
	fmt.Fprintln(stdout, "api: stopped")
	return err
}

// readSessionKey reads the web session key: 64 hex digits in a file that
// only its owner may read.
func readSessionKey(path string) ([]byte, error) {
	b, err := keys.ReadSecretFile(path, "api: session key")
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(b)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("api: session key %s: not 64 hex digits (make one: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')", path)
	}
	return key, nil
}
