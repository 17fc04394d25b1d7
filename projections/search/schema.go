// Package search is the ClickHouse projection that makes calls searchable.
// Its tables are disposable: dropping them and replaying the topics rebuilds
// them. Rows are versioned (ReplacingMergeTree) and read with FINAL, so a
// replayed event never adds a row to query results.
//
// The schema works on ClickHouse 18.16 (Debian 12's package) and on current
// releases: DateTime, not DateTime64; no Nullable in sort keys; and INSERTs
// always name their columns, which clickhouse-go's native protocol needs
// on 18.16.
package search

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/verbatimrec/verbatim/internal/loopback"
)

// Config says how to reach ClickHouse.
type Config struct {
	// Addr is host:port of the native protocol. Required.
	Addr string
	// Database, default "verbatim"; created by Migrate.
	Database string
	// User and Password authenticate; Password is never logged. Without
	// a user, ClickHouse's default user is taken, on loopback only.
	User, Password string
	// TLS speaks the native protocol over TLS (ClickHouse's secure port),
	// checking the server's certificate against the system's CAs, or
	// CAFile's (a PEM file) when it is set, which implies TLS.
	TLS    bool
	CAFile string
	// Insecure allows the plain native protocol to another host than
	// loopback: the password then crosses the network in clear.
	Insecure bool
}

func (c *Config) setDefaults() {
	if c.Database == "" {
		c.Database = "verbatim"
	}
	if c.CAFile != "" {
		c.TLS = true
	}
}

// Validate reports missing settings, and refuses a password or the
// default user sent in clear to another host than loopback.
func (c Config) Validate() error {
	local := loopback.HostPort(c.Addr)
	switch {
	case c.Addr != "" && !local && c.User == "":
		return fmt.Errorf("search: clickhouse %s: a user is required (VERBATIM_CLICKHOUSE_USER): the default user is for loopback only", c.Addr)
	case c.Addr != "" && !local && !c.TLS && c.CAFile == "" && !c.Insecure:
		return fmt.Errorf("search: clickhouse %s: the plain native protocol to another host sends the password in clear: "+
			"use TLS (VERBATIM_CLICKHOUSE_TLS=true or VERBATIM_CLICKHOUSE_CA=FILE) or allow it explicitly (VERBATIM_CLICKHOUSE_INSECURE=true)", c.Addr)
	}
	if c.Addr == "" {
		return errors.New("search: clickhouse address is required")
	}
	if c.Database != "" {
		return ValidDatabase(c.Database)
	}
	return nil
}

// Open connects to ClickHouse.
func Open(ctx context.Context, cfg Config) (driver.Conn, string, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	user := cfg.User
	if user == "" {
		user = "default" // on loopback only (Validate)
	}
	opts := &clickhouse.Options{
		Addr:        []string{cfg.Addr},
		Auth:        clickhouse.Auth{Username: user, Password: cfg.Password},
		DialTimeout: 5 * time.Second,
	}
	if cfg.TLS {
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, "", fmt.Errorf("search: clickhouse CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, "", fmt.Errorf("search: clickhouse CA %s holds no certificate", cfg.CAFile)
			}
			opts.TLS.RootCAs = pool
		}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, "", fmt.Errorf("search: clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("search: clickhouse %s: %w", cfg.Addr, err)
	}
	return conn, cfg.Database, nil
}

// migrations are applied in order, once each; never edit a released one.
// {db} is replaced by the database name.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS {db}.calls (
		tenant String,
		call_id String,
		started_at DateTime,
		ended_at DateTime,
		duration_ms UInt64,
		end_reason String,
		source String,
		version UInt64
	) ENGINE = ReplacingMergeTree(version)
	PARTITION BY toYYYYMM(started_at)
	ORDER BY (tenant, call_id)`,
	`CREATE TABLE IF NOT EXISTS {db}.participants (
		tenant String,
		call_id String,
		participant_id String,
		role String,
		uri String,
		number String,
		display_name String,
		started_at DateTime,
		version UInt64
	) ENGINE = ReplacingMergeTree(version)
	PARTITION BY toYYYYMM(started_at)
	ORDER BY (tenant, call_id, participant_id)`,
	`CREATE TABLE IF NOT EXISTS {db}.recordings (
		tenant String,
		call_id String,
		recording_id String,
		object_key String,
		format String,
		duration_ms UInt64,
		channels UInt8,
		plaintext_sha256 String,
		ciphertext_sha256 String,
		key_id String,
		stored_at DateTime,
		version UInt64
	) ENGINE = ReplacingMergeTree(version)
	PARTITION BY toYYYYMM(stored_at)
	ORDER BY (tenant, call_id, recording_id)`,
	"ALTER TABLE {db}.calls ADD COLUMN sip_call_id String",
	// Completeness of each recording: totals over its streams, and the
	// per-stream report as JSON.
	`ALTER TABLE {db}.recordings
		ADD COLUMN end_reason String,
		ADD COLUMN raw_object_key String,
		ADD COLUMN ciphertext_size UInt64,
		ADD COLUMN packets_captured UInt64,
		ADD COLUMN packets_in_recording UInt64,
		ADD COLUMN packets_missing UInt64,
		ADD COLUMN duplicates UInt64,
		ADD COLUMN late UInt64,
		ADD COLUMN batches_lost UInt64,
		ADD COLUMN completeness String`,
	"ALTER TABLE {db}.recordings ADD COLUMN streams_not_decoded UInt8",
	// A RecordingFailed row: the reason; the raw media object is kept.
	"ALTER TABLE {db}.recordings ADD COLUMN failure String",
	// Contact-centre metadata (MetadataAttached), one row per event.
	`CREATE TABLE IF NOT EXISTS {db}.metadata (
		tenant String,
		call_id String,
		event_id String,
		occurred_at DateTime,
		source String,
		agent_id String,
		skill_group String,
		requested_service String,
		wrap_up_code String,
		agent_name String,
		ani String,
		dnis String,
		variable_names Array(String),
		variable_values Array(String),
		version UInt64
	) ENGINE = ReplacingMergeTree(version)
	PARTITION BY toYYYYMM(occurred_at)
	ORDER BY (tenant, call_id, event_id)`,
	// DTMF keyed during the call (RFC 4733, SIP INFO), as stored: "*" per
	// digit when the tenant records in PCI mode.
	"ALTER TABLE {db}.metadata ADD COLUMN digits String, ADD COLUMN digits_masked UInt8",
	// Scores: QA evaluations, and call quality from RTCP.
	"ALTER TABLE {db}.metadata ADD COLUMN score_names Array(String), ADD COLUMN score_values Array(Float64)",
	// Streams kept in their own codec (Opus as Ogg), as JSON.
	"ALTER TABLE {db}.recordings ADD COLUMN stream_objects String",
	// Transfers: the conversation a call belongs to.
	"ALTER TABLE {db}.calls ADD COLUMN conversation_id String",
	// The ledgers (RecordingStored.ledgers, JSON with proto field names)
	// and the status schemas.Summarize derives from them.
	"ALTER TABLE {db}.recordings ADD COLUMN ledgers String, ADD COLUMN status String",
	// Keys of the communication session each call records
	// (CallStarted.session_keys): calls sharing one are recordings of one
	// conversation (SIPREC and passive capture of the same call).
	`CREATE TABLE IF NOT EXISTS {db}.session_keys (
		tenant String,
		session_key String,
		call_id String,
		started_at DateTime,
		version UInt64
	) ENGINE = ReplacingMergeTree(version)
	PARTITION BY toYYYYMM(started_at)
	ORDER BY (tenant, session_key, call_id)`,
	// Reprocessed recordings (RecordingStored.supersedes): the recording
	// each supersedes and why, its generation (0 for a call's first), and
	// the processing that made it. A call's current recording is the one
	// of the highest generation.
	`ALTER TABLE {db}.recordings
		ADD COLUMN supersedes String,
		ADD COLUMN supersede_reason String,
		ADD COLUMN generation UInt32,
		ADD COLUMN processing String`,
	// The data key sealing a call's personal fields (CallStarted
	// data_key_id), for the API to seal the metadata it takes in.
	"ALTER TABLE {db}.calls ADD COLUMN data_key_id String",
	// Comments on a call (MetadataPersonal.comments, from the API).
	"ALTER TABLE {db}.metadata ADD COLUMN comments Array(String)",
	// Tags on a call (MetadataAttached.tags), in the clear.
	"ALTER TABLE {db}.metadata ADD COLUMN tags Array(String)",
	// The contact centre's ids of a call (MetadataAttached.peripheral_ids),
	// by which a CTI integration attaches data to it.
	"ALTER TABLE {db}.metadata ADD COLUMN peripheral_ids Array(String)",
	// The audit log (projections/audit): each tenant's entries in log
	// order, the leaf (the event's bytes as the topic holds them), the
	// tree's stored hashes the entry made, the event's fields for
	// queries, and where on the topic it was read. One partition, so an
	// append (one insert) is all or nothing.
	`CREATE TABLE IF NOT EXISTS {db}.audit_log (
		tenant String,
		idx UInt64,
		leaf String,
		hashes Array(FixedString(32)),
		event_id String,
		occurred_at DateTime,
		action String,
		actor_subject String,
		actor_role String,
		target_type String,
		target_id String,
		call_id String,
		result String,
		reason String,
		source_address String,
		kafka_partition Int32,
		kafka_offset Int64,
		appended_at DateTime
	) ENGINE = MergeTree ORDER BY (tenant, idx)`,
	// The audit log's signed checkpoints, as written to object storage.
	`CREATE TABLE IF NOT EXISTS {db}.audit_checkpoints (
		tenant String,
		size UInt64,
		root String,
		note String,
		object_key String,
		written_at DateTime
	) ENGINE = MergeTree ORDER BY (tenant, size, written_at)`,
	// When object lock lets a recording's objects be deleted
	// (RecordingStored.retain_until); 0 when they are not locked.
	"ALTER TABLE {db}.recordings ADD COLUMN retain_until DateTime",
	// Calls erased (CallErased): their rows are deleted, and no later
	// event of theirs is projected, in a rebuild neither. Ids and times
	// only, no personal data.
	`CREATE TABLE IF NOT EXISTS {db}.erased_calls (
		tenant String,
		call_id String,
		request_id String,
		reason String,
		erased_at DateTime
	) ENGINE = ReplacingMergeTree(erased_at)
	ORDER BY (tenant, call_id)`,
	// The call's direction (CallStarted.direction), e.g. DIRECTION_INBOUND.
	"ALTER TABLE {db}.calls ADD COLUMN direction String",
	// Locks extended by retention class (verbatim retention apply): a
	// recording of a call in a class is kept at least until then.
	`CREATE TABLE IF NOT EXISTS {db}.retention_extensions (
		tenant String,
		call_id String,
		retain_until DateTime,
		class String,
		extended_at DateTime
	) ENGINE = ReplacingMergeTree(retain_until)
	ORDER BY (tenant, call_id)`,
}

// ErasedTables hold a call's rows, each with tenant and call_id columns:
// an erased call's rows are deleted from each.
var ErasedTables = []string{"calls", "participants", "recordings", "metadata", "session_keys", "retention_extensions"}

// Migrate creates the database and applies pending migrations. It is safe
// to run at every start and from several processes: every statement is
// idempotent.
func Migrate(ctx context.Context, conn driver.Conn, db string) (applied int, err error) {
	if err := ValidDatabase(db); err != nil {
		return 0, err
	}
	q := func(s string) string { return replaceDB(s, db) }
	if err := conn.Exec(ctx, q("CREATE DATABASE IF NOT EXISTS {db}")); err != nil {
		return 0, fmt.Errorf("search: create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, q(`CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
		version UInt32, applied_at DateTime) ENGINE = ReplacingMergeTree ORDER BY version`)); err != nil {
		return 0, fmt.Errorf("search: schema_migrations: %w", err)
	}
	var current uint32
	row := conn.QueryRow(ctx, q("SELECT toUInt32(count()) FROM (SELECT DISTINCT version FROM {db}.schema_migrations)"))
	if err := row.Scan(&current); err != nil {
		return 0, fmt.Errorf("search: read schema version: %w", err)
	}
	for i := int(current); i < len(migrations); i++ {
		if err := conn.Exec(ctx, q(migrations[i])); err != nil {
			return applied, fmt.Errorf("search: migration %d: %w", i+1, err)
		}
		// A batch, not INSERT ... VALUES: 18.16 only takes native inserts
		// as data blocks.
		b, err := conn.PrepareBatch(ctx, q("INSERT INTO {db}.schema_migrations (version, applied_at)"))
		if err == nil {
			err = b.Append(uint32(i+1), time.Now())
		}
		if err == nil {
			err = b.Send()
		}
		if err != nil {
			return applied, fmt.Errorf("search: record migration %d: %w", i+1, err)
		}
		applied++
	}
	return applied, nil
}

// MigrationStatements are the statements Migrate applies to database db,
// in order (after creating the database and schema_migrations): for
// checking the schema on another ClickHouse than the one tests run.
func MigrationStatements(db string) []string {
	out := make([]string, len(migrations))
	for i, m := range migrations {
		out[i] = replaceDB(m, db)
	}
	return out
}

func replaceDB(s, db string) string { return strings.ReplaceAll(s, "{db}", "`"+db+"`") }
