package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsNeverOnTheCommandLine: an SRTP key or a Vault token given
// as an argument, where ps shows it to every user, is refused with the
// way to pass it; a key file others can read is refused; a bad line of
// a key file is named.
func TestSecretsNeverOnTheCommandLine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.keys", "# out of band\nAES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz\n", 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ingest", "pcap", "--srtp-key", "AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz", "x.pcap"}, "--srtp-key-file"},
		{[]string{"ingest", "pcap", "--srtp-key-file", write("open.keys", "AES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz\n", 0o644), "x.pcap"}, "readable by others"},
		{[]string{"ingest", "pcap", "--srtp-key-file", write("bad.keys", "# one good, one not\nAES_CM_128_HMAC_SHA1_80:inline:aSBrbm93IGFsbCB5b3VyIGxpdHRsZSBzZWNyZXRz\nROT13:inline:abc\n", 0o600), "x.pcap"}, "line 3"},
		{[]string{"ingest", "pcap", "--vault-token", "s.secret", "x.pcap"}, "flag provided but not defined: -vault-token"},
		{[]string{"process", "--vault-addr", "http://127.0.0.1:1", "--vault-token-file", write("open.token", "s.secret\n", 0o640)}, "readable by others"},
		// and the log flags every long-running role has
		{[]string{"process", "--log-level", "loud"}, "debug, info, warn or error"},
		{[]string{"siprec", "--log-format", "yaml"}, "text or json"},
	} {
		out, err := runOut(ctx, c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%q: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
	// A key file of the owner's only is taken (the capture then is missing).
	if out, err := runOut(ctx, "ingest", "pcap", "--srtp-key-file", good, filepath.Join(dir, "missing.pcap")); err == nil || strings.Contains(err.Error(), "srtp") {
		t.Errorf("a good key file: %v\n%s", err, out)
	}
}
