package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
)

// kafkaFlags is the --brokers flag every Kafka-facing command shares; the
// default is `verbatim dev`'s embedded broker.
type kafkaFlags struct {
	brokers *string
	// metrics, once the role serves its operations endpoint, receives
	// the metrics of every client made from these flags.
	metrics *prometheus.Registerer
}

func addKafkaFlags(fs *flag.FlagSet) kafkaFlags {
	return kafkaFlags{brokers: fs.String("brokers", envOr("VERBATIM_KAFKA_BROKERS", "127.0.0.1:19092"),
		"Kafka seed brokers, comma separated (env VERBATIM_KAFKA_BROKERS); the default is `verbatim dev`'s"), metrics: new(prometheus.Registerer)}
}

// config is how the role clientID reaches Kafka, logging warnings to stderr.
func (k kafkaFlags) config(clientID string, stderr io.Writer) kafkaclient.Config {
	return kafkaclient.Config{Brokers: strings.Split(*k.brokers, ","), ClientID: clientID, Logger: warnLogger(stderr), Metrics: *k.metrics}
}

// client returns a client for the role clientID, logging warnings to stderr.
func (k kafkaFlags) client(clientID string, stderr io.Writer, opts ...kgo.Opt) (*kgo.Client, error) {
	return kafkaclient.New(k.config(clientID, stderr), opts...)
}

// warnLogger logs warnings and errors as text to w.
func warnLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
