package keys_test

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/internal/keys"
)

// TestVaultTLS: a Vault whose certificate a private CA signed is reached
// with --vault-ca and refused without it; plain HTTP to another host than
// loopback is refused unless allowed, since the token would cross in
// clear.
func TestVaultTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/transit/keys/verbatim-tenant-demo" || r.Header.Get("X-Vault-Token") != "s.test" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data": {"latest_version": 3, "min_decryption_version": 2}}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := keys.NewVault(keys.VaultConfig{Address: srv.URL, Token: "s.test", CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if latest, min, err := v.KEKVersions(ctx, "demo"); err != nil || latest != 3 || min != 2 {
		t.Fatalf("with the CA: %d %d %v", latest, min, err)
	}
	t.Setenv("VAULT_CACERT", "") // what the Vault client would read behind Verbatim's back
	v, err = keys.NewVault(keys.VaultConfig{Address: srv.URL, Token: "s.test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.KEKVersions(ctx, "demo"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v", err)
	}
	if _, err := keys.NewVault(keys.VaultConfig{Address: "http://vault.example:8200", Token: "s.test"}); err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Fatalf("plain HTTP to another host: %v", err)
	}
	for _, ok := range []keys.VaultConfig{{Address: "http://127.0.0.1:8200", Token: "t"}, {Address: "http://localhost:8200", Token: "t"},
		{Address: "http://vault:8200", Token: "t", Insecure: true}} {
		if _, err := keys.NewVault(ok); err != nil {
			t.Errorf("%s: %v", ok.Address, err)
		}
	}
}
