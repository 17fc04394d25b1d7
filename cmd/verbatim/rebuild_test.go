package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestProjectionRebuild: the search projection rebuilt into a new
// database from the start of the topics holds what the serving one holds,
// tenant day for tenant day, and says so. Calls recorded afterwards and
// projected into neither show as a difference once a second run of the
// rebuild (which goes on where the first stopped) has them.
func TestProjectionRebuild(t *testing.T) {
	stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCLIEnv(ctx, t, "rebuild")
	e.record(stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g711.pcap"), stacktest.SharedTestdata(t, "pcap/wireshark_DTMFsipinfo.pcap"))
	fresh := e.db + "_rebuilt"
	t.Cleanup(func() {
		chAddr := stacktest.Env(t, "VERBATIM_CLICKHOUSE_ADDR")
		if conn, _, err := (chFlags{addr: &chAddr, db: &fresh}).open(context.Background()); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+fresh+"`")
			conn.Close()
		}
	})
	rebuild := []string{"project", "search", "--rebuild", "--database", fresh, "--compare", e.db, "--brokers", e.brokers, "--keyring", e.keyring}
	out := e.cmd(rebuild...)
	if !strings.Contains(out, fresh+" and "+e.db+" hold the same calls, participants, recordings and metadata on every tenant's day") {
		t.Fatalf("rebuild: %s", out)
	}
	t.Log(out)
	if rs := e.find("--database", fresh); len(rs) == 0 {
		t.Fatal("the rebuilt database finds no call")
	}

	// A call recorded now and projected only by the rebuild's second run.
	e.t.Log(e.cmd("ingest", "pcap", "--brokers", e.brokers, "--keyring", e.keyring, stacktest.SharedTestdata(t, "pcap/wireshark_sip-rtp-g729a.pcap")))
	e.t.Log(e.cmd("process", "--brokers", e.brokers, "--keyring", e.keyring, "--objects", e.objects, "--spool", t.TempDir(), "--exit-when-idle", "--quiet"))
	got, err := runOut(ctx, rebuild...)
	if err == nil || !strings.Contains(got, "differ on 1 of") || !strings.Contains(got, "calls 0 / 1") {
		t.Fatalf("second rebuild, with a call the old projection lacks: %v\n%s", err, got)
	}
	t.Log(got)
}
