// Package devstack is Verbatim's embedded default: the whole pipeline's
// infrastructure in one process with no external service but ClickHouse.
// An in-process Kafka broker (kfake) persisted to the data directory, a
// filesystem object store and a local keyring stand in for Kafka, S3 and
// Vault; the production implementations share their interfaces.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/schemas"
)

// Config configures the embedded default.
type Config struct {
	// DataDir holds the broker log, objects and keyring. Required.
	DataDir string
	// KafkaPort is the loopback port of the embedded broker, so external
	// tools (kcat, other Verbatim processes) can reach it. 0 picks a free
	// port; `verbatim dev` defaults to 19092.
	KafkaPort int
	// Logger, default discard.
	Logger *slog.Logger
}

// Stack is a running embedded default. Close it to flush the broker.
type Stack struct {
	// Brokers are the embedded broker's addresses.
	Brokers []string
	// Keys is the local keyring.
	Keys *keys.Keyring
	// Store is the filesystem object store.
	Store *objstore.FS
	// Paths, for telling users where things are.
	KafkaDir, ObjectsDir, KeyringPath string

	cluster *kfake.Cluster
}

// Start starts the embedded broker, creates the v1 topics and opens the
// keyring and object store.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("devstack: data directory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The broker writes its log files readable by all (0644): the data
	// directory, the owner's only, keeps every other user out of them, of
	// the objects and of the keyring.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	s := &Stack{
		KafkaDir:    filepath.Join(cfg.DataDir, "kafka"),
		ObjectsDir:  filepath.Join(cfg.DataDir, "objects"),
		KeyringPath: filepath.Join(cfg.DataDir, "keyring.json"),
	}
	var err error
	if s.Keys, err = keys.OpenKeyring(s.KeyringPath); err != nil {
		return nil, err
	}
	if s.Store, err = objstore.NewFS(s.ObjectsDir); err != nil {
		return nil, err
	}
	port := cfg.KafkaPort
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DataDir(s.KafkaDir),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		}),
	}
	if s.cluster, err = kfake.NewCluster(opts...); err != nil {
		return nil, fmt.Errorf("devstack: embedded kafka on 127.0.0.1:%d: %w", port, err)
	}
	s.Brokers = s.cluster.ListenAddrs()
	admin, err := kafkaclient.New(kafkaclient.Config{Brokers: s.Brokers, ClientID: "verbatim-dev"})
	if err != nil {
		s.Close()
		return nil, err
	}
	defer admin.Close()
	if err := kafkaclient.EnsureTopics(ctx, admin, schemas.Topics(), 1); err != nil {
		s.Close()
		return nil, err
	}
	cfg.Logger.Info("embedded stack started", "brokers", s.Brokers, "data", cfg.DataDir)
	return s, nil
}

// Client returns a Kafka client for the embedded broker.
func (s *Stack) Client(clientID string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kafkaclient.New(kafkaclient.Config{Brokers: s.Brokers, ClientID: clientID}, opts...)
}

// Close stops the broker, persisting its state.
func (s *Stack) Close() {
	if s.cluster != nil {
		s.cluster.Close()
	}
}
