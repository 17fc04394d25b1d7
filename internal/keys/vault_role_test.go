package keys_test

import (
	"context"
	"os"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// TestVaultRoleToken: the token the local stack gives the roles makes and
// unwraps the tenants' data keys, and is refused everything else: the
// mounts, a new engine, the policies, another mount's keys.
func TestVaultRoleToken(t *testing.T) {
	ctx := context.Background()
	addr, tok := stacktest.Env(t, "VERBATIM_VAULT_ADDR"), stacktest.Env(t, "VERBATIM_VAULT_TOKEN")
	m, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: tok, CAFile: os.Getenv("VERBATIM_VAULT_CA")})
	if err != nil {
		t.Fatal(err)
	}
	dk, err := m.GenerateDataKey(ctx, "demo")
	if err != nil {
		t.Fatalf("a data key with the role token: %v", err)
	}
	if dek, err := m.UnwrapDataKey(ctx, "demo", dk.Wrapped); err != nil || string(dek) != string(dk.Plaintext) {
		t.Fatalf("unwrap with the role token: %v", err)
	}
	vc := vault.DefaultConfig()
	vc.Address = addr
	if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: os.Getenv("VERBATIM_VAULT_CA")}); err != nil {
		t.Fatal(err)
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	for what, try := range map[string]func() error{
		"list the mounts": func() error { _, err := c.Sys().ListMountsWithContext(ctx); return err },
		"mount an engine": func() error { return c.Sys().MountWithContext(ctx, "role-test", &vault.MountInput{Type: "transit"}) },
		"write a policy": func() error {
			return c.Sys().PutPolicyWithContext(ctx, "role-test", `path "*" { capabilities = ["sudo"] }`)
		},
		"read another key": func() error { _, err := c.Logical().ReadWithContext(ctx, "transit/keys/someone-else"); return err },
		"create an orphan token": func() error {
			_, err := c.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{})
			return err
		},
	} {
		if err := try(); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("the role token may %s: %v", what, err)
		}
	}
}
