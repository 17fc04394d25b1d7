package keys_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// testManager is the contract every Manager must meet.
func testManager(t *testing.T, m keys.Manager, tenant, other string) {
	ctx := context.Background()

	k1, err := m.GenerateDataKey(ctx, tenant)
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if len(k1.Plaintext) != keys.DEKSize {
		t.Fatalf("DEK is %d bytes, want %d", len(k1.Plaintext), keys.DEKSize)
	}
	if bytes.Contains(k1.Wrapped.Ciphertext, k1.Plaintext) {
		t.Fatal("wrapped key contains the plaintext key")
	}
	if k1.Wrapped.KEKVersion == 0 || k1.Wrapped.KEKName == "" {
		t.Fatalf("wrapped key lacks KEK name or version: %+v", k1.Wrapped)
	}
	t.Logf("%s: generated %v, wrapped %d bytes", m.Kind(), k1, len(k1.Wrapped.Ciphertext))

	k2, err := m.GenerateDataKey(ctx, tenant)
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if bytes.Equal(k1.Plaintext, k2.Plaintext) {
		t.Fatal("two data keys are equal")
	}

	got, err := m.UnwrapDataKey(ctx, tenant, k1.Wrapped)
	if err != nil {
		t.Fatalf("UnwrapDataKey: %v", err)
	}
	if !bytes.Equal(got, k1.Plaintext) {
		t.Fatal("unwrapped key differs from the generated one")
	}

	// Another tenant cannot unwrap it.
	if _, err := m.UnwrapDataKey(ctx, other, k1.Wrapped); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("unwrap as another tenant: got %v, want ErrUnwrap", err)
	}
	// Tampering is detected.
	bad := k1.Wrapped
	bad.Ciphertext = bytes.Clone(bad.Ciphertext)
	bad.Ciphertext[len(bad.Ciphertext)-3] ^= 0x01
	if _, err := m.UnwrapDataKey(ctx, tenant, bad); err == nil {
		t.Fatal("tampered wrapped key was unwrapped")
	}
	if _, err := m.GenerateDataKey(ctx, "Bad/Tenant"); err == nil {
		t.Fatal("invalid tenant accepted")
	}
	if s := k1.String(); strings.Contains(s, string(k1.Plaintext)) || !strings.Contains(s, "REDACTED") {
		t.Fatalf("String() does not redact: %s", s)
	}
}

func TestKeyring(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "keyring.json")
	kr, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	testManager(t, kr, "acme", "globex")

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode %v, want 0600", st.Mode().Perm())
	}

	// Keys survive a reopen.
	k, err := kr.GenerateDataKey(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	kr2, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kr2.UnwrapDataKey(context.Background(), "acme", k.Wrapped)
	if err != nil || !bytes.Equal(got, k.Plaintext) {
		t.Fatalf("reopened keyring: %v", err)
	}

	// A keyring others can read is refused.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.OpenKeyring(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable keyring: got %v", err)
	}
	// A corrupt one gives a clear error.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.OpenKeyring(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt keyring: got %v", err)
	}
}

// TestVaultTransit runs the contract against the real Vault of the local
// stack: a Transit data key is generated, then unwrapped.
func TestVaultTransit(t *testing.T) {
	addr := stacktest.Env(t, "VERBATIM_VAULT_ADDR")
	token := stacktest.Env(t, "VERBATIM_VAULT_TOKEN")
	m, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: token, CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	testManager(t, m, "demo", "acme")

	// Without CreateKeys an unknown tenant is a clear error.
	strict, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.GenerateDataKey(context.Background(), "no-such-tenant"); !errors.Is(err, keys.ErrUnknownTenant) {
		t.Fatalf("unknown tenant: got %v, want ErrUnknownTenant", err)
	}
	// A wrong token fails closed.
	bad, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: "not-a-token"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.GenerateDataKey(context.Background(), "demo"); err == nil {
		t.Fatal("bad token produced a data key")
	}
}

// TestAuditSigners: both key managers sign with an ed25519 key they make
// on first use and keep: the signature verifies with the public key they
// give, the key is the same when opened again, and a signature of other
// bytes does not verify.
func TestAuditSigners(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	ring, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := keys.NewVault(keys.VaultConfig{Address: stacktest.Env(t, "VERBATIM_VAULT_ADDR"), Token: stacktest.Env(t, "VERBATIM_VAULT_TOKEN"),
		CreateKeys: true, AuditKey: "verbatim-audit-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		t.Fatal(err)
	}
	signers := map[string]keys.AuditSigner{"keyring": ring, "vault (transit)": v}
	for name, s := range signers {
		pub, err := s.AuditPublicKey(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		msg := []byte("verbatim.example/audit/demo\n3\nAAAA\n")
		sig, err := s.SignAudit(ctx, msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !ed25519.Verify(pub, msg, sig) || ed25519.Verify(pub, []byte("other"), sig) {
			t.Fatalf("%s: the signature does not verify with the public key, or verifies other bytes", name)
		}
		again, err := s.AuditPublicKey(ctx)
		if err != nil || !again.Equal(pub) {
			t.Fatalf("%s: the public key changed: %v", name, err)
		}
	}
	reopened, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ring.AuditPublicKey(ctx)
	if b, err := reopened.AuditPublicKey(ctx); err != nil || !a.Equal(b) {
		t.Fatalf("the keyring's audit key after reopening: %v", err)
	}
}
