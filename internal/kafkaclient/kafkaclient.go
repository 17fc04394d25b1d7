// Package kafkaclient builds franz-go clients for Verbatim's roles and
// creates the v1 topics the schemas package catalogues.
package kafkaclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/verbatimrec/verbatim/internal/loopback"
	"github.com/verbatimrec/verbatim/schemas"
)

// Config says how to reach Kafka.
type Config struct {
	// Brokers are seed addresses, host:port. Required.
	Brokers []string
	// ClientID names the role in broker logs, e.g. "verbatim-ingest".
	ClientID string
	// Logger receives the client's warnings and errors. Default: discard.
	Logger *slog.Logger
	// Metrics, if set, receives each client's metrics (franz-go's kprom:
	// connections, requests, bytes and records produced and fetched,
	// buffered records), labelled client="CLIENTID#N"; a closed client's
	// are unregistered.
	Metrics prometheus.Registerer
	// TLS dials the brokers over TLS, checking their certificates against
	// the system's CAs or CAFile's (a PEM file, which implies TLS); with
	// CertFile and KeyFile the client presents its own (mutual TLS).
	TLS                       bool
	CAFile, CertFile, KeyFile string
	// SASLUser and SASLPassword authenticate with SCRAM-SHA-512 when the
	// user is set. The password is never logged.
	SASLUser, SASLPassword string
	// Insecure allows a SASL password without TLS to brokers not on
	// loopback (it crosses the network in a SCRAM exchange, not in clear,
	// but the records do not).
	Insecure bool
}

// WithEnv is c with its TLS and SASL settings from the environment, the
// one rule every role and tool follows: VERBATIM_KAFKA_TLS=true,
// VERBATIM_KAFKA_CA, _CERT and _KEY (PEM files), _SASL_USER and
// _SASL_PASSWORD (SCRAM-SHA-512), and _INSECURE=true to allow SASL
// without TLS to brokers not on loopback.
func (c Config) WithEnv() Config {
	c.TLS = os.Getenv("VERBATIM_KAFKA_TLS") == "true"
	c.CAFile, c.CertFile, c.KeyFile = os.Getenv("VERBATIM_KAFKA_CA"), os.Getenv("VERBATIM_KAFKA_CERT"), os.Getenv("VERBATIM_KAFKA_KEY")
	c.SASLUser, c.SASLPassword = os.Getenv("VERBATIM_KAFKA_SASL_USER"), os.Getenv("VERBATIM_KAFKA_SASL_PASSWORD")
	c.Insecure = os.Getenv("VERBATIM_KAFKA_INSECURE") == "true"
	return c
}

// clients numbers the clients whose metrics are registered.
var clients atomic.Uint64

// Validate reports missing settings, and refuses credentials without TLS
// to brokers not on loopback unless Insecure.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafkaclient: at least one broker is required")
	}
	if c.SASLUser != "" && c.SASLPassword == "" {
		return fmt.Errorf("kafkaclient: SASL user %s has no password (VERBATIM_KAFKA_SASL_PASSWORD)", c.SASLUser)
	}
	if c.SASLUser != "" && !c.TLS && c.CAFile == "" && !c.Insecure {
		for _, b := range c.Brokers {
			if !loopback.HostPort(b) {
				return fmt.Errorf("kafkaclient: SASL to %s without TLS: the records cross the network in clear (VERBATIM_KAFKA_TLS=true, or allow it explicitly)", b)
			}
		}
	}
	return nil
}

// New returns a client with Verbatim's defaults plus opts: idempotent
// writes with acks from all in-sync replicas, zstd batches, read-committed
// fetches so consumers never see aborted transactions.
func New(cfg Config, opts ...kgo.Opt) (*kgo.Client, error) {
	base, err := options(cfg)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkaclient: %w", err)
	}
	return cl, nil
}

// NewGroupTransactSession returns an exactly-once consume-transform-produce
// session with the same defaults as New; opts must name the group, the
// topics and a transactional id.
func NewGroupTransactSession(cfg Config, opts ...kgo.Opt) (*kgo.GroupTransactSession, error) {
	base, err := options(cfg)
	if err != nil {
		return nil, err
	}
	s, err := kgo.NewGroupTransactSession(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkaclient: %w", err)
	}
	return s, nil
}

func options(cfg Config) ([]kgo.Opt, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression(), kgo.Lz4Compression(), kgo.NoCompression()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ProducerLinger(5 * time.Millisecond),
	}
	if cfg.ClientID != "" {
		base = append(base, kgo.ClientID(cfg.ClientID))
	}
	if cfg.Logger != nil {
		base = append(base, kgo.WithLogger(kslog.New(cfg.Logger)))
	}
	if cfg.TLS || cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		base = append(base, kgo.DialTLSConfig(tc))
	}
	if cfg.SASLUser != "" {
		base = append(base, kgo.SASL(scram.Auth{User: cfg.SASLUser, Pass: cfg.SASLPassword}.AsSha512Mechanism()))
	}
	if cfg.Metrics != nil {
		label := fmt.Sprintf("%s#%d", cfg.ClientID, clients.Add(1))
		m := kprom.NewMetrics("verbatim_kafka", kprom.Registerer(prometheus.WrapRegistererWith(prometheus.Labels{"client": label}, cfg.Metrics)))
		base = append(base, kgo.WithHooks(m))
	}
	return base, nil
}

// tlsConfig is the TLS the files name.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaclient: CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafkaclient: CA %s holds no certificate", c.CAFile)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("kafkaclient: a client certificate needs its key, and a key its certificate")
	}
	if c.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaclient: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// EnsureTopics creates the topics that do not exist yet, with their
// catalogued partitions and configs, and returns once every partition of
// every topic is served (its leader answers a list of offsets): a topic
// just created is not served by its leader at once, and a producer that
// writes to it then gets UNKNOWN_TOPIC_OR_PARTITION. Existing topics are
// left alone, so it is safe to run at every start.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics []schemas.Topic, replicationFactor int16) error {
	if err := createTopics(ctx, cl, topics, replicationFactor); err != nil {
		return err
	}
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.Name
	}
	_, _, err := Bounds(ctx, kadm.NewClient(cl), names...)
	return err
}

func createTopics(ctx context.Context, cl *kgo.Client, topics []schemas.Topic, replicationFactor int16) error {
	adm := kadm.NewClient(cl)
	var errs []error
	for _, t := range topics {
		cfg := map[string]*string{}
		for k, v := range t.Configs() {
			cfg[k] = kadm.StringPtr(v)
		}
		res, err := adm.CreateTopic(ctx, t.Partitions, replicationFactor, cfg, t.Name)
		if err == nil {
			err = res.Err
		}
		if errors.Is(err, kerr.TopicAlreadyExists) && len(t.Config) > 0 {
			// A topic created by an earlier release gets the settings
			// added since (the keys topic's bounded compaction lag).
			var alter []kadm.AlterConfig
			for k, v := range t.Config {
				alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(v)})
			}
			rs, aerr := adm.AlterTopicConfigs(ctx, alter, t.Name)
			if aerr == nil {
				for _, r := range rs {
					if r.Err != nil {
						aerr = fmt.Errorf("%w: %s", r.Err, r.ErrMessage)
					}
				}
			}
			if aerr != nil {
				errs = append(errs, fmt.Errorf("kafkaclient: topic %s exists; setting %v: %w", t.Name, t.Config, aerr))
			}
			continue
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("kafkaclient: create topic %s: %w", t.Name, err))
		}
	}
	return errors.Join(errs...)
}
