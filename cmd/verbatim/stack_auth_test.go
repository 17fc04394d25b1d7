package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/stacktest"
	"github.com/verbatimrec/verbatim/projections/search"
)

// TestServicesRefuseClientsWithoutCredentials: the local stack's
// ClickHouse refuses a wrong password and its default user (18.16 says
// "Wrong password" and "Unknown user"; current releases "Authentication
// failed"), MinIO an
// unsigned request, and Vault a request without a token (or with a
// wrong one), each over TLS where the service speaks it. (Kafka takes
// any client on loopback until its SASL_SSL profile.)
func TestServicesRefuseClientsWithoutCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch := stacktest.Env(t, "VERBATIM_CLICKHOUSE_TLS_ADDR")
	ca := stacktest.Env(t, "VERBATIM_TLS_CA")
	for name, cfg := range map[string]search.Config{
		"a wrong password": {Addr: ch, User: os.Getenv("VERBATIM_CLICKHOUSE_USER"), Password: "wrong", CAFile: ca},
		"the default user": {Addr: ch, CAFile: ca},
	} {
		if conn, _, err := search.Open(ctx, cfg); err == nil {
			conn.Close()
			t.Errorf("ClickHouse took %s", name)
		} else if !strings.Contains(err.Error(), "Wrong password") && !strings.Contains(err.Error(), "Unknown user") && !strings.Contains(err.Error(), "Authentication failed") {
			t.Errorf("ClickHouse, %s: %v", name, err)
		}
	}
	pem, err := os.ReadFile(stacktest.Env(t, "VERBATIM_S3_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(url string, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s3 := "https://" + stacktest.Env(t, "VERBATIM_S3_ENDPOINT") + "/" + stacktest.Env(t, "VERBATIM_S3_BUCKET") + "/"
	if code, body := get(s3, nil); code != http.StatusForbidden || !strings.Contains(body, "AccessDenied") {
		t.Errorf("MinIO, an unsigned listing: %d %s", code, body)
	}
	vault := stacktest.Env(t, "VERBATIM_VAULT_ADDR") + "/v1/transit/keys/verbatim-tenant-demo"
	for name, h := range map[string]map[string]string{"no token": nil, "a wrong token": {"X-Vault-Token": "s.wrong"}} {
		if code, body := get(vault, h); code != http.StatusForbidden {
			t.Errorf("Vault, %s: %d %s", name, code, body)
		}
	}
}
