package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// TestIngestProjectSearch is the user journey so far: captures in, calls
// found by search, against the local stack's ClickHouse and an embedded
// broker.
func TestIngestProjectSearch(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	db := fmt.Sprintf("verbatim_e2e_%d", time.Now().UnixNano())

	cmd := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(ctx, args, &out, &errb); err != nil {
			t.Fatalf("verbatim %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.String()
	}
	cmd("topics", "--create", "--brokers", brokers)
	out := cmd("ingest", "pcap", "--brokers", brokers, "--keyring", keyring,
		stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"), stacktest.SharedTestdata(t, "pcap/wireshark_SIP_DTMF2.cap"))
	t.Log("\n" + out)
	out = cmd("project", "search", "--brokers", brokers, "--keyring", keyring, "--database", db, "--exit-when-idle", "3s")
	t.Log(out)
	defer func() {
		if conn, _, err := (chFlags{addr: ptr(stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")), db: &db}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+db+"`")
			conn.Close()
		}
	}()

	find := func(args ...string) []search.Result {
		t.Helper()
		var rs []search.Result
		if err := json.Unmarshal([]byte(cmd(append([]string{"search", "--json", "--database", db}, args...)...)), &rs); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if rs := find(); len(rs) != 4 {
		t.Fatalf("%d calls found, want 4 (2 per capture)", len(rs))
	}
	rs := find("--call-id", "1-1966@10.0.2.20")
	if len(rs) != 1 || rs[0].EndReason != "END_REASON_BYE" || rs[0].Duration < 8*time.Second || rs[0].Duration > 9*time.Second ||
		rs[0].StartedAt.Format("2006-01-02") != "2016-11-26" || len(rs[0].Parties) != 2 || rs[0].Parties[0].URI != "sip:test@10.0.2.15:5060" {
		t.Fatalf("1-1966: %+v", rs)
	}
	if rs := find("--party", "sip:sipp@10.0.2.20:5060"); len(rs) != 2 {
		t.Fatalf("by caller URI: %d calls", len(rs))
	}
	if rs := find("--call-id", "5514@192.168.105.110"); len(rs) != 1 || rs[0].EndReason != "END_REASON_REJECTED" {
		t.Fatalf("declined call: %+v", rs)
	}
	if rs := find("--tenant", "acme"); len(rs) != 0 {
		t.Fatalf("another tenant sees %d calls", len(rs))
	}
	table := cmd("search", "--database", db, "--party", "2504")
	if !strings.Contains(table, "25672@192.168.105.110") || !strings.Contains(table, "2 calls") {
		t.Fatalf("table output:\n%s", table)
	}
	t.Log("\n" + table)
}

func ptr[T any](v T) *T { return &v }
