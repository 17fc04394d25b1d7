package search_test

import (
	"strings"
	"testing"

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
