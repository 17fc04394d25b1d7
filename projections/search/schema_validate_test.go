package search_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// TestConfigRefusesClearText: to another host than loopback, the plain
// native protocol (the password in clear) and the default user are
// refused with the way out; TLS, an explicit allowance or loopback pass.
func TestConfigRefusesClearText(t *testing.T) {
	for _, c := range []struct {
		cfg  search.Config
		want string
	}{
		{search.Config{Addr: "clickhouse.internal:9000", User: "verbatim", Password: "p"}, "sends the password in clear"},
		{search.Config{Addr: "10.0.0.5:9440", Password: "p", TLS: true}, "a user is required"},
		{search.Config{Addr: "clickhouse.internal:9440", User: "verbatim", TLS: true}, ""},
		{search.Config{Addr: "clickhouse.internal:9440", User: "verbatim", CAFile: "ca.pem"}, ""},
		{search.Config{Addr: "clickhouse:9000", User: "verbatim", Insecure: true}, ""},
		{search.Config{Addr: "127.0.0.1:19000"}, ""},
		{search.Config{Addr: "[::1]:19000"}, ""},
		{search.Config{Addr: "localhost:19000", User: "x"}, ""},
	} {
		err := c.cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestClickHouseOverTLS: the local stack's ClickHouse (18.16) serves the
// native protocol over TLS too: a client with the stack's CA connects
// and queries; one that trusts only the system's CAs is refused the
// handshake; the plain protocol on the secure port gets nowhere.
func TestClickHouseOverTLS(t *testing.T) {
	addr, ca := stacktest.Env(t, "VERBATIM_CLICKHOUSE_TLS_ADDR"), stacktest.Env(t, "VERBATIM_TLS_CA")
	user, pw := os.Getenv("VERBATIM_CLICKHOUSE_USER"), os.Getenv("VERBATIM_CLICKHOUSE_PASSWORD")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := search.Open(ctx, search.Config{Addr: addr, User: user, Password: pw, CAFile: ca})
	if err != nil {
		t.Fatalf("over TLS with the stack's CA: %v", err)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	t.Logf("ClickHouse %s over TLS on %s", version, addr)
	if _, _, err := search.Open(ctx, search.Config{Addr: addr, User: user, Password: pw, TLS: true}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a certificate of an unknown CA: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	if _, _, err := search.Open(pctx, search.Config{Addr: addr, User: user, Password: pw}); err == nil {
		t.Fatal("the plain protocol was served on the secure port")
	}
}
