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
	m, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: token, CAFile: os.Getenv("VERBATIM_VAULT_CA"), CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	testManager(t, m, "demo", "acme")

	// Without CreateKeys an unknown tenant is a clear error.
	strict, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: token, CAFile: os.Getenv("VERBATIM_VAULT_CA")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.GenerateDataKey(context.Background(), "no-such-tenant"); !errors.Is(err, keys.ErrUnknownTenant) {
		t.Fatalf("unknown tenant: got %v, want ErrUnknownTenant", err)
	}
	// A wrong token fails closed.
	bad, err := keys.NewVault(keys.VaultConfig{Address: addr, Token: "not-a-token", CAFile: os.Getenv("VERBATIM_VAULT_CA")})
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
	v, err := keys.NewVault(keys.VaultConfig{Address: stacktest.Env(t, "VERBATIM_VAULT_ADDR"), Token: stacktest.Env(t, "VERBATIM_VAULT_TOKEN"), CAFile: os.Getenv("VERBATIM_VAULT_CA"),
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

// bothManagers are a keyring of the test's and the local stack's Vault
// Transit, which may create keys.
func bothManagers(t *testing.T) (*keys.Keyring, *keys.Vault) {
	t.Helper()
	ring, err := keys.OpenKeyring(filepath.Join(t.TempDir(), "keyring.json"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := keys.NewVault(keys.VaultConfig{Address: stacktest.Env(t, "VERBATIM_VAULT_ADDR"), Token: stacktest.Env(t, "VERBATIM_VAULT_TOKEN"), CAFile: os.Getenv("VERBATIM_VAULT_CA"), CreateKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	return ring, v
}

// TestRotation: both key managers rotate a tenant's KEK, rewrap data keys
// of the old version to the new one (the same DEK), and once the old
// version is retired, a key still wrapped by it refuses to unwrap while
// the rewrapped one unwraps.
func TestRotation(t *testing.T) {
	ctx := context.Background()
	tenant := "rot" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ring, v := bothManagers(t)
	for name, m := range map[string]interface {
		keys.Manager
		keys.Rotator
	}{"keyring": ring, "vault (transit)": v} {
		var old []keys.DataKey
		for range 3 {
			dk, err := m.GenerateDataKey(ctx, tenant)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			old = append(old, dk)
		}
		if old[0].Wrapped.KEKVersion != 1 {
			t.Fatalf("%s: first version %d", name, old[0].Wrapped.KEKVersion)
		}
		if n, err := m.RotateKEK(ctx, tenant); err != nil || n != 2 {
			t.Fatalf("%s: rotate: %d %v", name, n, err)
		}
		if dk, err := m.GenerateDataKey(ctx, tenant); err != nil || dk.Wrapped.KEKVersion != 2 {
			t.Fatalf("%s: a data key after rotation: version %d, %v", name, dk.Wrapped.KEKVersion, err)
		}
		ws := []keys.Wrapped{old[0].Wrapped, old[1].Wrapped}
		re, err := m.RewrapDataKeys(ctx, tenant, ws)
		if err != nil || len(re) != 2 || re[0].KEKVersion != 2 {
			t.Fatalf("%s: rewrap: %+v %v", name, re, err)
		}
		if err := m.RetireKEKVersions(ctx, tenant, 2); err != nil {
			t.Fatalf("%s: retire: %v", name, err)
		}
		latest, min, err := m.KEKVersions(ctx, tenant)
		if err != nil || latest != 2 || min != 2 {
			t.Fatalf("%s: versions %d %d %v", name, latest, min, err)
		}
		for i, w := range re {
			dek, err := m.UnwrapDataKey(ctx, tenant, w)
			if err != nil || !bytes.Equal(dek, old[i].Plaintext) {
				t.Fatalf("%s: the rewrapped key %d: %v", name, i, err)
			}
		}
		if _, err := m.UnwrapDataKey(ctx, tenant, old[2].Wrapped); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("%s: a key under the retired version unwrapped: %v", name, err)
		}
		if err := m.RetireKEKVersions(ctx, tenant, 3); err == nil {
			t.Fatalf("%s: a version past the latest was retired", name)
		}
	}
}

// TestDestroyKEK: both key managers destroy a tenant's KEK, every
// version: the tenant's data keys, of the old version and the new, no
// longer unwrap; another tenant's still do; destroying again is no
// error. The keyring then refuses to make the tenant a new KEK.
func TestDestroyKEK(t *testing.T) {
	ctx := context.Background()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	tenant, other := "gone"+suffix, "kept"+suffix
	ring, v := bothManagers(t)
	for name, m := range map[string]interface {
		keys.Manager
		keys.Rotator
		keys.Destroyer
	}{"keyring": ring, "vault (transit)": v} {
		dk1, err := m.GenerateDataKey(ctx, tenant)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := m.RotateKEK(ctx, tenant); err != nil {
			t.Fatalf("%s: rotate: %v", name, err)
		}
		dk2, err := m.GenerateDataKey(ctx, tenant)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		kept, err := m.GenerateDataKey(ctx, other)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := m.DestroyKEK(ctx, tenant); err != nil {
			t.Fatalf("%s: destroy: %v", name, err)
		}
		for i, w := range []keys.Wrapped{dk1.Wrapped, dk2.Wrapped} {
			if dek, err := m.UnwrapDataKey(ctx, tenant, w); err == nil {
				t.Fatalf("%s: data key %d (version %d) unwraps after the KEK was destroyed: %d bytes", name, i, w.KEKVersion, len(dek))
			}
		}
		if dek, err := m.UnwrapDataKey(ctx, other, kept.Wrapped); err != nil || !bytes.Equal(dek, kept.Plaintext) {
			t.Fatalf("%s: another tenant's key: %v", name, err)
		}
		if err := m.DestroyKEK(ctx, tenant); err != nil {
			t.Fatalf("%s: destroying again: %v", name, err)
		}
	}
	if _, err := ring.GenerateDataKey(ctx, tenant); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("the keyring made a destroyed tenant a key: %v", err)
	}
}
