// Package keys manages data-encryption keys (DEKs): it generates a fresh
// AES-256 key per call or recording and wraps it under the tenant's
// key-encryption key (KEK). Two implementations share the Manager seam:
// Vault Transit for production and a local keyring file for the embedded
// default. Plaintext DEKs never leave the process; wrapped ones go to the
// keys topic.
package keys

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
)

// DEKSize is the size of a data key in bytes (AES-256).
const DEKSize = 32

// ErrUnknownTenant is returned when no key-encryption key exists for a
// tenant and the manager may not create one.
var ErrUnknownTenant = errors.New("keys: no key-encryption key for tenant")

// ErrUnwrap is returned when a wrapped key cannot be decrypted: it was
// wrapped for another tenant, tampered with, or its KEK version is gone.
var ErrUnwrap = errors.New("keys: cannot unwrap data key")

// Manager generates and unwraps data keys. Implementations are safe for
// concurrent use.
type Manager interface {
	// GenerateDataKey returns a fresh DEK and its wrapped form.
	GenerateDataKey(ctx context.Context, tenant string) (DataKey, error)
	// UnwrapDataKey returns the plaintext DEK of w, which must have been
	// wrapped for tenant.
	UnwrapDataKey(ctx context.Context, tenant string, w Wrapped) ([]byte, error)
	// Kind names the implementation as the keys topic records it:
	// "vault-transit" or "local-keyring".
	Kind() string
}

// AuditSigner signs the audit log's checkpoints with an ed25519 key it
// holds: Vault Transit's (the private key never leaves Vault), or the
// local keyring's. Both key managers are AuditSigners.
type AuditSigner interface {
	// AuditPublicKey returns the signing key's public half, making the
	// key on first use where the manager may.
	AuditPublicKey(ctx context.Context) (ed25519.PublicKey, error)
	// SignAudit signs msg (pure ed25519, no prehash).
	SignAudit(ctx context.Context, msg []byte) ([]byte, error)
}

// Rotator rotates a tenant's key-encryption key and rewraps data keys to
// its newest version; once none is left under an old version, the old
// versions are retired (they no longer unwrap). Both key managers are
// Rotators.
type Rotator interface {
	// RotateKEK makes a new version of tenant's KEK, the one new data keys
	// are wrapped with, and returns it.
	RotateKEK(ctx context.Context, tenant string) (uint32, error)
	// KEKVersions are tenant's latest KEK version and the lowest that
	// still unwraps.
	KEKVersions(ctx context.Context, tenant string) (latest, minDecryption uint32, err error)
	// RewrapDataKeys wraps each DEK again under the latest version,
	// without it leaving the key manager (Vault) or memory (keyring).
	RewrapDataKeys(ctx context.Context, tenant string, ws []Wrapped) ([]Wrapped, error)
	// RetireKEKVersions makes versions below min refuse to unwrap.
	RetireKEKVersions(ctx context.Context, tenant string, min uint32) error
}

// Destroyer destroys a tenant's key-encryption key, every version of
// it, for good: every data key it wrapped no longer unwraps, so all the
// tenant's data is unreadable at once (tenant offboarding). Both key
// managers are Destroyers.
type Destroyer interface {
	DestroyKEK(ctx context.Context, tenant string) error
}

// ErrDestroyed is wrapped when a tenant's KEK was destroyed: nothing is
// sealed for the tenant again.
var ErrDestroyed = errors.New("keys: the tenant's key-encryption key was destroyed (offboarded)")

// Wrapped is a DEK encrypted under a KEK.
type Wrapped struct {
	// KEKName is the Transit key name or local keyring entry.
	KEKName string
	// KEKVersion is the version of the KEK that wrapped the key.
	KEKVersion uint32
	// Ciphertext is the wrapped DEK.
	Ciphertext []byte
}

// DataKey is a plaintext DEK with its wrapped form. Plaintext is secret: the
// type redacts it when printed or logged.
type DataKey struct {
	Plaintext []byte
	Wrapped   Wrapped
}

// String redacts the plaintext key.
func (k DataKey) String() string {
	return fmt.Sprintf("DataKey{kek=%s v%d, plaintext=REDACTED}", k.Wrapped.KEKName, k.Wrapped.KEKVersion)
}

// LogValue redacts the plaintext key.
func (k DataKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kek", k.Wrapped.KEKName), slog.Any("kek_version", k.Wrapped.KEKVersion))
}

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateTenant checks that a tenant id is safe to use in key names, object
// keys and file names: 1-63 lower-case letters, digits and dashes.
func ValidateTenant(tenant string) error {
	if !tenantRE.MatchString(tenant) {
		return fmt.Errorf("keys: invalid tenant %q: want 1-63 of [a-z0-9-], starting with a letter or digit", tenant)
	}
	return nil
}
