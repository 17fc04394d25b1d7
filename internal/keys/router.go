package keys

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Router is a Manager that keeps each tenant's key-encryption key where
// the tenant's contract says: in the deployment's key manager (Default),
// or in a key manager of the customer's own (bring your own key: the
// customer's Vault, its address, mount and credentials). Verbatim never
// holds such a KEK: Transit wraps and unwraps inside the customer's
// Vault, and a customer that revokes Verbatim's token makes its data
// unreadable at once. The audit log's signing key is the deployment's.
type Router struct {
	Default Manager
	Tenants map[string]Manager
}

var (
	_ Manager     = (*Router)(nil)
	_ AuditSigner = (*Router)(nil)
	_ Rotator     = (*Router)(nil)
	_ Destroyer   = (*Router)(nil)
)

// DestroyKEK implements Destroyer, with the tenant's manager.
func (r *Router) DestroyKEK(ctx context.Context, tenant string) error {
	d, ok := r.pick(tenant).(Destroyer)
	if !ok {
		return fmt.Errorf("keys: tenant %s's key manager (%s) cannot destroy its key", tenant, r.pick(tenant).Kind())
	}
	return d.DestroyKEK(ctx, tenant)
}

func (r *Router) pick(tenant string) Manager {
	if m, ok := r.Tenants[tenant]; ok {
		return m
	}
	return r.Default
}

// GenerateDataKey implements Manager, with the tenant's manager.
func (r *Router) GenerateDataKey(ctx context.Context, tenant string) (DataKey, error) {
	return r.pick(tenant).GenerateDataKey(ctx, tenant)
}

// UnwrapDataKey implements Manager, with the tenant's manager.
func (r *Router) UnwrapDataKey(ctx context.Context, tenant string, w Wrapped) ([]byte, error) {
	return r.pick(tenant).UnwrapDataKey(ctx, tenant, w)
}

// Kind implements Manager: the default's (every manager a tenant may
// have is of a kind the registry names per key).
func (r *Router) Kind() string { return r.Default.Kind() }

func (r *Router) rotator(tenant string) (Rotator, error) {
	m := r.pick(tenant)
	rot, ok := m.(Rotator)
	if !ok {
		return nil, fmt.Errorf("keys: tenant %s's key manager (%s) cannot rotate keys", tenant, m.Kind())
	}
	return rot, nil
}

// RotateKEK implements Rotator, with the tenant's manager.
func (r *Router) RotateKEK(ctx context.Context, tenant string) (uint32, error) {
	rot, err := r.rotator(tenant)
	if err != nil {
		return 0, err
	}
	return rot.RotateKEK(ctx, tenant)
}

// KEKVersions implements Rotator, with the tenant's manager.
func (r *Router) KEKVersions(ctx context.Context, tenant string) (uint32, uint32, error) {
	rot, err := r.rotator(tenant)
	if err != nil {
		return 0, 0, err
	}
	return rot.KEKVersions(ctx, tenant)
}

// RewrapDataKeys implements Rotator, with the tenant's manager.
func (r *Router) RewrapDataKeys(ctx context.Context, tenant string, ws []Wrapped) ([]Wrapped, error) {
	rot, err := r.rotator(tenant)
	if err != nil {
		return nil, err
	}
	return rot.RewrapDataKeys(ctx, tenant, ws)
}

// RetireKEKVersions implements Rotator, with the tenant's manager.
func (r *Router) RetireKEKVersions(ctx context.Context, tenant string, min uint32) error {
	rot, err := r.rotator(tenant)
	if err != nil {
		return err
	}
	return rot.RetireKEKVersions(ctx, tenant, min)
}

func (r *Router) signer() (AuditSigner, error) {
	s, ok := r.Default.(AuditSigner)
	if !ok {
		return nil, errors.New("keys: the default key manager cannot sign the audit log")
	}
	return s, nil
}

// AuditPublicKey implements AuditSigner, with the default manager.
func (r *Router) AuditPublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	s, err := r.signer()
	if err != nil {
		return nil, err
	}
	return s.AuditPublicKey(ctx)
}

// SignAudit implements AuditSigner, with the default manager.
func (r *Router) SignAudit(ctx context.Context, msg []byte) ([]byte, error) {
	s, err := r.signer()
	if err != nil {
		return nil, err
	}
	return s.SignAudit(ctx, msg)
}

// TenantVault is one tenant's own Vault, as a tenant-keys file lists it.
type TenantVault struct {
	Tenant string `json:"tenant"`
	// Address of the customer's Vault; Mount its Transit engine (default
	// "transit"); KeyPrefix before the tenant in the key's name (default
	// "verbatim-tenant-").
	Address   string `json:"vault_addr"`
	Mount     string `json:"mount"`
	KeyPrefix string `json:"key_prefix"`
	// TokenFile holds the token the customer gave Verbatim (0600): never
	// in the file itself, nor on a command line.
	TokenFile string `json:"token_file"`
	// CAFile is the PEM file of the CA of the customer's Vault, if not a public one.
	CAFile string `json:"ca_file"`
}

// LoadTenantKeys reads a tenant-keys file (a JSON list of TenantVault)
// and returns a Router over def.
func LoadTenantKeys(path string, def Manager) (*Router, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: tenant keys: %w", err)
	}
	var tvs []TenantVault
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tvs); err != nil {
		return nil, fmt.Errorf("keys: tenant keys %s: %w", path, err)
	}
	r := &Router{Default: def, Tenants: map[string]Manager{}}
	for i, tv := range tvs {
		if err := ValidateTenant(tv.Tenant); err != nil {
			return nil, fmt.Errorf("keys: tenant keys %s, entry %d: %w", path, i+1, err)
		}
		if _, dup := r.Tenants[tv.Tenant]; dup {
			return nil, fmt.Errorf("keys: tenant keys %s: tenant %s listed twice", path, tv.Tenant)
		}
		if tv.Address == "" || tv.TokenFile == "" {
			return nil, fmt.Errorf("keys: tenant keys %s, tenant %s: vault_addr and token_file are required", path, tv.Tenant)
		}
		tok, err := ReadSecretFile(tv.TokenFile, "keys: tenant "+tv.Tenant+"'s token file")
		if err != nil {
			return nil, err
		}
		v, err := NewVault(VaultConfig{Address: tv.Address, Token: tok, Mount: tv.Mount, KeyPrefix: tv.KeyPrefix, CAFile: tv.CAFile})
		if err != nil {
			return nil, fmt.Errorf("keys: tenant %s: %w", tv.Tenant, err)
		}
		r.Tenants[tv.Tenant] = v
	}
	return r, nil
}
