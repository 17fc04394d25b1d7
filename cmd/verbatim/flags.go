package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/ops"
)

// kafkaFlags is the --brokers flag every Kafka-facing command shares; the
// default is `verbatim dev`'s embedded broker.
type kafkaFlags struct {
	brokers *string
	// metrics, once the role serves its operations endpoint, receives
	// the metrics of every client made from these flags.
	metrics *prometheus.Registerer
	// embedded is `verbatim dev`'s own broker, on loopback without TLS or
	// SASL: the environment's Kafka security is not for it.
	embedded bool
}

func addKafkaFlags(fs *flag.FlagSet) kafkaFlags {
	return kafkaFlags{brokers: fs.String("brokers", envOr("VERBATIM_KAFKA_BROKERS", "127.0.0.1:19092"),
		"Kafka seed brokers, comma separated (env VERBATIM_KAFKA_BROKERS; TLS and SCRAM-SHA-512 from VERBATIM_KAFKA_TLS, _CA, _CERT, _KEY, _SASL_USER, _SASL_PASSWORD); the default is `verbatim dev`'s"),
		metrics: new(prometheus.Registerer)}
}

// config is how the role clientID reaches Kafka, logging warnings to
// stderr: TLS and SCRAM-SHA-512 from the environment (VERBATIM_KAFKA_TLS,
// _CA, _CERT, _KEY, _SASL_USER, _SASL_PASSWORD; _INSECURE=true for SASL
// without TLS to another host than loopback).
func (k kafkaFlags) config(clientID string, stderr io.Writer) kafkaclient.Config {
	c := kafkaclient.Config{Brokers: strings.Split(*k.brokers, ","), ClientID: clientID, Logger: warnLogger(stderr), Metrics: *k.metrics}
	if k.embedded {
		return c
	}
	return c.WithEnv()
}

// client returns a client for the role clientID, logging warnings to stderr.
func (k kafkaFlags) client(clientID string, stderr io.Writer, opts ...kgo.Opt) (*kgo.Client, error) {
	return kafkaclient.New(k.config(clientID, stderr), opts...)
}

// logSettings are how this process logs, once a role's --log-level or
// --log-format set them; until then the environment's
// (VERBATIM_LOG_LEVEL, default warn; VERBATIM_LOG_FORMAT, default text).
var logSettings atomic.Pointer[ops.LogSettings]

// envLogSettings are the environment's log settings, or warn and text
// where it names none (or something else).
func envLogSettings() ops.LogSettings {
	s, err := ops.ParseLogSettings(envOr("VERBATIM_LOG_LEVEL", "warn"), envOr("VERBATIM_LOG_FORMAT", "text"))
	if err != nil {
		return ops.LogSettings{Level: slog.LevelWarn, Format: "text"}
	}
	return s
}

// warnLogger logs to w at the process's level and in its format (by
// default warnings and errors, as text), repeated warnings rate-limited.
func warnLogger(w io.Writer) *slog.Logger {
	s := logSettings.Load()
	if s == nil {
		e := envLogSettings()
		s = &e
	}
	return s.Logger(w)
}

// loadCAPool reads a PEM file of CA certificates.
func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", path)
	}
	return pool, nil
}
