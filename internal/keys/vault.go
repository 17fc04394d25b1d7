package keys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/verbatimrec/verbatim/internal/loopback"
)

// VaultConfig configures a Vault Transit key manager.
type VaultConfig struct {
	// Address of Vault, e.g. "https://vault.example:8200". Required.
	Address string
	// Token authenticates to Vault. Required. It is never logged.
	Token string
	// Mount is the Transit engine's mount path. Default "transit".
	Mount string
	// KeyPrefix is prepended to the tenant to name its Transit key.
	// Default "verbatim-tenant-".
	KeyPrefix string
	// AuditKey names the Transit key (type ed25519) signing the audit
	// log's checkpoints. Default "verbatim-audit-log".
	AuditKey string
	// CreateKeys lets the manager create a tenant's Transit key (type
	// aes256-gcm96), and the audit signing key, on first use. Off by default: production Vault policies
	// usually let Verbatim use keys, not create them.
	CreateKeys bool
	// CAFile is a PEM file of the CA(s) Vault's certificate is checked
	// against, where it is not a public one.
	CAFile string
	// Insecure allows plain HTTP to an address other than loopback: the
	// token then crosses the network in clear. Off by default.
	Insecure bool
}

func (c *VaultConfig) setDefaults() {
	if c.Mount == "" {
		c.Mount = "transit"
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "verbatim-tenant-"
	}
	if c.AuditKey == "" {
		c.AuditKey = "verbatim-audit-log"
	}
}

// Validate reports missing settings.
func (c VaultConfig) Validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("keys: vault address is required"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("keys: vault token is required"))
	}
	if u, err := url.Parse(c.Address); c.Address != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http")) {
		errs = append(errs, fmt.Errorf("keys: vault address %q: an http(s) URL", c.Address))
	} else if c.Address != "" && u.Scheme == "http" && !c.Insecure && !loopback.Host(u.Hostname()) {
		errs = append(errs, fmt.Errorf("keys: vault address %s is plain HTTP to another host: the token would cross the network in clear "+
			"(use https, or allow it explicitly: --vault-insecure)", c.Address))
	}
	return errors.Join(errs...)
}

// String redacts the token.
func (c VaultConfig) String() string {
	return fmt.Sprintf("VaultConfig{Address:%s Mount:%s KeyPrefix:%s Token:REDACTED}", c.Address, c.Mount, c.KeyPrefix)
}

// Vault is a Manager that uses Vault's Transit engine: the tenant's KEK never
// leaves Vault; Verbatim asks Transit for a data key (datakey/plaintext) and
// to decrypt wrapped ones.
type Vault struct {
	cfg VaultConfig
	c   *vault.Client
}

var (
	_ Manager     = (*Vault)(nil)
	_ AuditSigner = (*Vault)(nil)
	_ Rotator     = (*Vault)(nil)
	_ Destroyer   = (*Vault)(nil)
)

// NewVault returns a Transit key manager.
func NewVault(cfg VaultConfig) (*Vault, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("keys: vault config: %w", vc.Error)
	}
	vc.Address = cfg.Address
	if cfg.CAFile != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.CAFile}); err != nil {
			return nil, fmt.Errorf("keys: vault CA %s: %w", cfg.CAFile, err)
		}
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("keys: vault client: %w", err)
	}
	c.SetToken(cfg.Token)
	return &Vault{cfg: cfg, c: c}, nil
}

// Kind implements Manager.
func (*Vault) Kind() string { return "vault-transit" }

func (v *Vault) keyName(tenant string) string { return v.cfg.KeyPrefix + tenant }

// GenerateDataKey implements Manager.
func (v *Vault) GenerateDataKey(ctx context.Context, tenant string) (DataKey, error) {
	if err := ValidateTenant(tenant); err != nil {
		return DataKey{}, err
	}
	name := v.keyName(tenant)
	path := v.cfg.Mount + "/datakey/plaintext/" + name
	body := map[string]any{"bits": DEKSize * 8}
	s, err := v.c.Logical().WriteWithContext(ctx, path, body)
	if err != nil && v.cfg.CreateKeys && isMissingKey(err) {
		if _, cerr := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/keys/"+name, map[string]any{"type": "aes256-gcm96"}); cerr != nil {
			return DataKey{}, fmt.Errorf("keys: create transit key %s: %w", name, cerr)
		}
		s, err = v.c.Logical().WriteWithContext(ctx, path, body)
	}
	if err != nil {
		if isMissingKey(err) {
			return DataKey{}, fmt.Errorf("%w %q: transit key %s: %w", ErrUnknownTenant, tenant, name, err)
		}
		return DataKey{}, fmt.Errorf("keys: transit datakey %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return DataKey{}, fmt.Errorf("keys: transit datakey %s: empty response", name)
	}
	pt, _ := s.Data["plaintext"].(string)
	ct, _ := s.Data["ciphertext"].(string)
	dek, err := base64.StdEncoding.DecodeString(pt)
	if err != nil || len(dek) != DEKSize {
		return DataKey{}, fmt.Errorf("keys: transit datakey %s: bad plaintext (%d bytes)", name, len(dek))
	}
	ver, err := transitVersion(ct)
	if err != nil {
		return DataKey{}, err
	}
	return DataKey{Plaintext: dek, Wrapped: Wrapped{KEKName: name, KEKVersion: ver, Ciphertext: []byte(ct)}}, nil
}

// UnwrapDataKey implements Manager.
func (v *Vault) UnwrapDataKey(ctx context.Context, tenant string, w Wrapped) ([]byte, error) {
	if err := ValidateTenant(tenant); err != nil {
		return nil, err
	}
	name := v.keyName(tenant)
	if w.KEKName != name {
		return nil, fmt.Errorf("%w: wrapped by %q, not tenant %q's key %q", ErrUnwrap, w.KEKName, tenant, name)
	}
	s, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/decrypt/"+name, map[string]any{"ciphertext": string(w.Ciphertext)})
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			return nil, fmt.Errorf("%w: transit %s: %w", ErrUnwrap, name, err)
		}
		return nil, fmt.Errorf("keys: transit decrypt %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("keys: transit decrypt %s: empty response", name)
	}
	pt, _ := s.Data["plaintext"].(string)
	dek, err := base64.StdEncoding.DecodeString(pt)
	if err != nil || len(dek) != DEKSize {
		return nil, fmt.Errorf("%w: transit %s returned %d bytes", ErrUnwrap, name, len(dek))
	}
	return dek, nil
}

func isMissingKey(err error) bool {
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "not found") || strings.Contains(e, "no existing key named") {
			return true
		}
	}
	return false
}

// transitVersion reads N from a "vault:vN:..." ciphertext.
func transitVersion(ct string) (uint32, error) {
	parts := strings.SplitN(ct, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return 0, fmt.Errorf("keys: unexpected transit ciphertext format")
	}
	n, err := strconv.ParseUint(parts[1][1:], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("keys: transit ciphertext version: %w", err)
	}
	return uint32(n), nil
}

// AuditPublicKey implements AuditSigner: the latest version of the
// Transit key's public half.
func (v *Vault) AuditPublicKey(ctx context.Context) (ed25519.PublicKey, error) {
	name := v.cfg.AuditKey
	s, err := v.c.Logical().ReadWithContext(ctx, v.cfg.Mount+"/keys/"+name)
	if err == nil && s == nil && v.cfg.CreateKeys {
		if _, err = v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/keys/"+name, map[string]any{"type": "ed25519"}); err != nil {
			return nil, fmt.Errorf("keys: create transit key %s: %w", name, err)
		}
		s, err = v.c.Logical().ReadWithContext(ctx, v.cfg.Mount+"/keys/"+name)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: transit key %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("keys: transit key %s does not exist (create it: type ed25519)", name)
	}
	if t, _ := s.Data["type"].(string); t != "ed25519" {
		return nil, fmt.Errorf("keys: transit key %s is of type %q, not ed25519", name, t)
	}
	latest := fmt.Sprint(s.Data["latest_version"])
	versions, _ := s.Data["keys"].(map[string]any)
	entry, _ := versions[latest].(map[string]any)
	pub, _ := entry["public_key"].(string)
	key, err := base64.StdEncoding.DecodeString(pub)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("keys: transit key %s version %s: no ed25519 public key", name, latest)
	}
	return ed25519.PublicKey(key), nil
}

// SignAudit implements AuditSigner, with the Transit key's latest version.
func (v *Vault) SignAudit(ctx context.Context, msg []byte) ([]byte, error) {
	name := v.cfg.AuditKey
	s, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/sign/"+name, map[string]any{"input": base64.StdEncoding.EncodeToString(msg)})
	if err != nil {
		return nil, fmt.Errorf("keys: transit sign %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("keys: transit sign %s: empty response", name)
	}
	sig, _ := s.Data["signature"].(string)
	parts := strings.Split(sig, ":")
	if len(parts) != 3 || parts[0] != "vault" {
		return nil, fmt.Errorf("keys: transit sign %s: signature %q is not vault:vN:BASE64", name, sig)
	}
	b, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(b) != ed25519.SignatureSize {
		return nil, fmt.Errorf("keys: transit sign %s: not an ed25519 signature", name)
	}
	return b, nil
}

// RotateKEK implements Rotator: Transit's rotate.
func (v *Vault) RotateKEK(ctx context.Context, tenant string) (uint32, error) {
	if err := ValidateTenant(tenant); err != nil {
		return 0, err
	}
	name := v.keyName(tenant)
	if _, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/keys/"+name+"/rotate", nil); err != nil {
		return 0, fmt.Errorf("keys: rotate transit key %s: %w", name, err)
	}
	latest, _, err := v.KEKVersions(ctx, tenant)
	return latest, err
}

// KEKVersions implements Rotator.
func (v *Vault) KEKVersions(ctx context.Context, tenant string) (uint32, uint32, error) {
	name := v.keyName(tenant)
	s, err := v.c.Logical().ReadWithContext(ctx, v.cfg.Mount+"/keys/"+name)
	if err != nil {
		return 0, 0, fmt.Errorf("keys: transit key %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return 0, 0, fmt.Errorf("%w %q: transit key %s does not exist", ErrUnknownTenant, tenant, name)
	}
	num := func(k string) (uint32, error) {
		n, err := strconv.ParseUint(fmt.Sprint(s.Data[k]), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("keys: transit key %s: %s %v", name, k, s.Data[k])
		}
		return uint32(n), nil
	}
	latest, err := num("latest_version")
	if err != nil {
		return 0, 0, err
	}
	min, err := num("min_decryption_version")
	return latest, min, err
}

// RewrapDataKeys implements Rotator: Transit's rewrap, in one batch; the
// DEKs never leave Vault.
func (v *Vault) RewrapDataKeys(ctx context.Context, tenant string, ws []Wrapped) ([]Wrapped, error) {
	name := v.keyName(tenant)
	batch := make([]map[string]any, len(ws))
	for i, w := range ws {
		if w.KEKName != name {
			return nil, fmt.Errorf("%w: wrapped by %q, not tenant %q's key %q", ErrUnwrap, w.KEKName, tenant, name)
		}
		batch[i] = map[string]any{"ciphertext": string(w.Ciphertext)}
	}
	s, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/rewrap/"+name, map[string]any{"batch_input": batch})
	if err != nil {
		return nil, fmt.Errorf("keys: transit rewrap %s: %w", name, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("keys: transit rewrap %s: empty response", name)
	}
	results, _ := s.Data["batch_results"].([]any)
	if len(results) != len(ws) {
		return nil, fmt.Errorf("keys: transit rewrap %s: %d results for %d keys", name, len(results), len(ws))
	}
	out := make([]Wrapped, len(ws))
	for i, r := range results {
		m, _ := r.(map[string]any)
		if e, _ := m["error"].(string); e != "" {
			return nil, fmt.Errorf("%w: transit rewrap %s, key %d: %s", ErrUnwrap, name, i+1, e)
		}
		ct, _ := m["ciphertext"].(string)
		ver, err := transitVersion(ct)
		if err != nil {
			return nil, err
		}
		out[i] = Wrapped{KEKName: name, KEKVersion: ver, Ciphertext: []byte(ct)}
	}
	return out, nil
}

// DestroyKEK implements Destroyer: Transit's key is made deletable and
// deleted, every version. The token needs update on the key's config and
// delete on the key (a BYOK customer's Vault may refuse: then the
// customer deletes it). A missing key is already destroyed.
func (v *Vault) DestroyKEK(ctx context.Context, tenant string) error {
	if err := ValidateTenant(tenant); err != nil {
		return err
	}
	name := v.keyName(tenant)
	if _, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		if isMissingKey(err) {
			return nil
		}
		return fmt.Errorf("keys: transit key %s: allowing its deletion: %w", name, err)
	}
	if _, err := v.c.Logical().DeleteWithContext(ctx, v.cfg.Mount+"/keys/"+name); err != nil {
		return fmt.Errorf("keys: deleting transit key %s: %w", name, err)
	}
	return nil
}

// RetireKEKVersions implements Rotator: Transit's min_decryption_version.
func (v *Vault) RetireKEKVersions(ctx context.Context, tenant string, min uint32) error {
	name := v.keyName(tenant)
	if _, err := v.c.Logical().WriteWithContext(ctx, v.cfg.Mount+"/keys/"+name+"/config", map[string]any{"min_decryption_version": min}); err != nil {
		return fmt.Errorf("keys: transit key %s: min_decryption_version %d: %w", name, min, err)
	}
	return nil
}
