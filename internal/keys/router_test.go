package keys_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestBringYourOwnKey: tenant acme's KEK lives in "the customer's Vault"
// (a Transit mount of its own, reached with a token whose policy allows
// only that mount); demo's in the deployment's keyring. Data keys of each
// are wrapped and unwrapped by their own manager, acme's rotate there,
// and once the customer revokes Verbatim's token acme's keys no longer
// unwrap while demo's still do. A token file others may read is refused.
func TestBringYourOwnKey(t *testing.T) {
	ctx := context.Background()
	addr := stacktest.Env(t, "VERBATIM_VAULT_ADDR")
	vc := vault.DefaultConfig()
	vc.Address = addr
	if ca := os.Getenv("VERBATIM_VAULT_CA"); ca != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: ca}); err != nil {
			t.Fatal(err)
		}
	}
	root, err := vault.NewClient(vc)
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(stacktest.Env(t, "VERBATIM_VAULT_ADMIN_TOKEN")) // mounting and policies are the operator's
	mount := "customer-acme-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := root.Sys().MountWithContext(ctx, mount, &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Sys().UnmountWithContext(context.Background(), mount) })
	if _, err := root.Logical().WriteWithContext(ctx, mount+"/keys/verbatim-tenant-acme", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	policy := `path "` + mount + `/*" { capabilities = ["create", "read", "update"] }`
	if err := root.Sys().PutPolicyWithContext(ctx, mount, policy); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{mount}, NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "acme.token")
	if err := os.WriteFile(tokenFile, []byte(tok.Auth.ClientToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, _ := json.Marshal([]keys.TenantVault{{Tenant: "acme", Address: addr, Mount: mount, TokenFile: tokenFile, CAFile: os.Getenv("VERBATIM_VAULT_CA")}})
	listFile := filepath.Join(dir, "tenant-keys.json")
	if err := os.WriteFile(listFile, list, 0o600); err != nil {
		t.Fatal(err)
	}
	ring, err := keys.OpenKeyring(filepath.Join(dir, "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := keys.LoadTenantKeys(listFile, ring)
	if err != nil {
		t.Fatal(err)
	}
	acme, err := r.GenerateDataKey(ctx, "acme")
	if err != nil || acme.Wrapped.KEKName != "verbatim-tenant-acme" || !strings.HasPrefix(string(acme.Wrapped.Ciphertext), "vault:v1:") {
		t.Fatalf("acme's data key: %+v %v", acme.Wrapped, err)
	}
	demo, err := r.GenerateDataKey(ctx, "demo")
	if err != nil || demo.Wrapped.KEKName != "local:demo" {
		t.Fatalf("demo's data key: %+v %v", demo.Wrapped, err)
	}
	for name, c := range map[string]struct {
		tenant string
		dk     keys.DataKey
	}{"acme": {"acme", acme}, "demo": {"demo", demo}} {
		got, err := r.UnwrapDataKey(ctx, c.tenant, c.dk.Wrapped)
		if err != nil || !bytes.Equal(got, c.dk.Plaintext) {
			t.Fatalf("%s: unwrap: %v", name, err)
		}
	}
	if _, err := ring.UnwrapDataKey(ctx, "acme", acme.Wrapped); err == nil {
		t.Fatal("the deployment's keyring unwrapped acme's key")
	}
	if v, err := r.RotateKEK(ctx, "acme"); err != nil || v != 2 {
		t.Fatalf("acme's rotation in its own Vault: %d %v", v, err)
	}
	if latest, _, err := ring.KEKVersions(ctx, "demo"); err != nil || latest != 1 {
		t.Fatalf("demo's KEK moved: %d %v", latest, err)
	}
	// The customer revokes Verbatim's token.
	if err := root.Auth().Token().RevokeTreeWithContext(ctx, tok.Auth.ClientToken); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UnwrapDataKey(ctx, "acme", acme.Wrapped); err == nil {
		t.Fatal("acme's key unwrapped after the customer revoked the token")
	}
	if _, err := r.UnwrapDataKey(ctx, "demo", demo.Wrapped); err != nil {
		t.Fatalf("demo's key after acme's revocation: %v", err)
	}
	if err := os.Chmod(tokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.LoadTenantKeys(listFile, ring); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a token file others may read: %v", err)
	}
	if err := os.WriteFile(listFile, []byte(`[{"tenant": "acme", "vault_addr": "x", "token_file": "y", "kek": "secret"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.LoadTenantKeys(listFile, ring); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}
