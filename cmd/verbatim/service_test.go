package main

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestServiceAccount: a CTI integration authenticates with a client
// certificate of the service CA whose name is a service account: it
// attaches metadata to the tenant's calls and reads nothing; a
// certificate of that CA that is no account, and one of another CA, get
// nothing.
func TestServiceAccount(t *testing.T) {
	e, ctx := g711Env(t, "service", 2*time.Minute)
	ca, other := stacktest.NewCA(t), stacktest.NewCA(t)
	accounts := filepath.Join(t.TempDir(), "accounts.json")
	if err := os.WriteFile(accounts, []byte(`[{"name": "cti-finesse", "tenant": "demo", "roles": ["service"]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	base := e.startAPI("--service-ca", ca.File, "--service-accounts", accounts)
	client := func(cert tls.Certificate) *http.Client {
		c := stacktest.TLSClient(t)
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
		return c
	}
	cti, _, _ := ca.Issue("cti-finesse")
	intruder, _, _ := ca.Issue("intruder")
	foreign, _, _ := other.Issue("cti-finesse")
	callID := e.find()[0].CallID
	do := func(c *http.Client, method, path, body string) (int, error) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "cti-1")
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	meta := `{"source": "cti:finesse", "agent_id": "agent-9"}`
	for _, c := range []struct {
		name         string
		client       *http.Client
		method, path string
		body         string
		want         int
	}{
		{"account, metadata", client(cti), "POST", "/v1/calls/" + callID + "/metadata", meta, 201},
		{"account, search", client(cti), "GET", "/v1/calls", "", 403},
		{"account, recording", client(cti), "GET", "/v1/calls/" + callID + "/recording", "", 403},
		{"no account", client(intruder), "POST", "/v1/calls/" + callID + "/metadata", meta, 401},
	} {
		if got, err := do(c.client, c.method, c.path, c.body); err != nil || got != c.want {
			t.Errorf("%s: %d (%v), want %d", c.name, got, err, c.want)
		}
	}
	if got, err := do(client(foreign), "POST", "/v1/calls/"+callID+"/metadata", meta); err == nil {
		t.Errorf("a certificate of another CA: HTTP %d, want the TLS handshake refused", got)
	}
}
