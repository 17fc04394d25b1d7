package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Keyring is a Manager backed by a local file of AES-256 key-encryption
// keys, one per tenant, for the embedded default and for single-host
// installs. The file is created with mode 0600 and refused if group or
// others can read it. A tenant's KEK is created on first use.
//
// Losing the file loses every recording sealed under it: back it up.
type Keyring struct {
	path string
	mu   struct {
		sync.Mutex
		file keyringFile
	}
}

var (
	_ Manager     = (*Keyring)(nil)
	_ AuditSigner = (*Keyring)(nil)
	_ Rotator     = (*Keyring)(nil)
	_ Destroyer   = (*Keyring)(nil)
)

type keyringFile struct {
	Format int                    `json:"format"`
	KEKs   map[string][]keyringKE `json:"keks"`
	// AuditSeed is the ed25519 seed of the key signing the audit log's
	// checkpoints (made on first use).
	AuditSeed []byte `json:"audit_ed25519_seed,omitempty"`
	// MinVersions are, per tenant, the lowest KEK version that unwraps
	// (RetireKEKVersions); older ones are kept but refuse.
	MinVersions map[string]uint32 `json:"min_versions,omitempty"`
	// Destroyed are the tenants whose KEKs were destroyed (DestroyKEK),
	// with when: no KEK is made for them again.
	Destroyed map[string]string `json:"destroyed,omitempty"`
}

type keyringKE struct {
	Version uint32 `json:"version"`
	Key     []byte `json:"key"`
}

// OpenKeyring opens the keyring file at path, creating it if it does not
// exist.
func OpenKeyring(path string) (*Keyring, error) {
	k := &Keyring{path: path}
	k.mu.file = keyringFile{Format: 1, KEKs: map[string][]keyringKE{}}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("keys: keyring dir: %w", err)
		}
		unlock, err := k.lockFile()
		if err != nil {
			return nil, err
		}
		defer unlock()
		if _, err := os.Stat(path); err == nil { // another process made it meanwhile
			return k, k.reloadLocked()
		}
		if err := k.saveLocked(); err != nil {
			return nil, err
		}
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("keys: keyring: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keys: keyring %s has mode %v; it must be readable by its owner only (chmod 600)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: keyring: %w", err)
	}
	if err := json.Unmarshal(b, &k.mu.file); err != nil {
		return nil, fmt.Errorf("keys: keyring %s is corrupt: %w", path, err)
	}
	if k.mu.file.Format != 1 {
		return nil, fmt.Errorf("keys: keyring %s has unknown format %d", path, k.mu.file.Format)
	}
	if k.mu.file.KEKs == nil {
		k.mu.file.KEKs = map[string][]keyringKE{}
	}
	return k, nil
}

// Kind implements Manager.
func (*Keyring) Kind() string { return "local-keyring" }

func (k *Keyring) saveLocked() error {
	b, err := json.MarshalIndent(k.mu.file, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: keyring: %w", err)
	}
	tmp := k.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("keys: keyring: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("keys: keyring: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("keys: keyring: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keys: keyring: %w", err)
	}
	if err := os.Rename(tmp, k.path); err != nil {
		return fmt.Errorf("keys: keyring: %w", err)
	}
	return nil
}

// kek returns the tenant's current KEK (version 0) or the given version,
// creating version 1 if create is set. Several processes may share the
// file (`verbatim dev` and `verbatim ingest`): a KEK not in memory is looked
// for in the file again, and a new one is added under an exclusive lock
// on the file, after re-reading it, so no process overwrites another's.
func (k *Keyring) kek(tenant string, version uint32, create bool) (keyringKE, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ks := k.mu.file.KEKs[tenant]
	if len(ks) == 0 || (version != 0 && !hasVersion(ks, version)) {
		unlock, err := k.lockFile()
		if err != nil {
			return keyringKE{}, err
		}
		defer unlock()
		if err := k.reloadLocked(); err != nil {
			return keyringKE{}, err
		}
		ks = k.mu.file.KEKs[tenant]
	}
	if len(ks) == 0 {
		if at, ok := k.mu.file.Destroyed[tenant]; ok {
			return keyringKE{}, fmt.Errorf("%w: tenant %q, at %s", ErrDestroyed, tenant, at)
		}
		if !create {
			return keyringKE{}, fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
		}
		key := make([]byte, DEKSize)
		if _, err := rand.Read(key); err != nil {
			return keyringKE{}, fmt.Errorf("keys: %w", err)
		}
		ks = []keyringKE{{Version: 1, Key: key}}
		k.mu.file.KEKs[tenant] = ks
		if err := k.saveLocked(); err != nil {
			delete(k.mu.file.KEKs, tenant)
			return keyringKE{}, err
		}
	}
	if version == 0 {
		return ks[len(ks)-1], nil
	}
	for _, e := range ks {
		if e.Version == version {
			return e, nil
		}
	}
	return keyringKE{}, fmt.Errorf("%w: tenant %q has no KEK version %d", ErrUnwrap, tenant, version)
}

func keyringAAD(tenant string, version uint32) []byte {
	return []byte("verbatim-keyring\x00" + tenant + "\x00" + strconv.FormatUint(uint64(version), 10))
}

func keyringAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return cipher.NewGCM(block)
}

// GenerateDataKey implements Manager.
func (k *Keyring) GenerateDataKey(_ context.Context, tenant string) (DataKey, error) {
	if err := ValidateTenant(tenant); err != nil {
		return DataKey{}, err
	}
	kek, err := k.kek(tenant, 0, true)
	if err != nil {
		return DataKey{}, err
	}
	aead, err := keyringAEAD(kek.Key)
	if err != nil {
		return DataKey{}, err
	}
	dek := make([]byte, DEKSize)
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+DEKSize+aead.Overhead())
	if _, err := rand.Read(dek); err != nil {
		return DataKey{}, fmt.Errorf("keys: %w", err)
	}
	if _, err := rand.Read(nonce); err != nil {
		return DataKey{}, fmt.Errorf("keys: %w", err)
	}
	ct := aead.Seal(nonce, nonce, dek, keyringAAD(tenant, kek.Version))
	return DataKey{Plaintext: dek, Wrapped: Wrapped{KEKName: "local:" + tenant, KEKVersion: kek.Version, Ciphertext: ct}}, nil
}

// UnwrapDataKey implements Manager.
func (k *Keyring) UnwrapDataKey(_ context.Context, tenant string, w Wrapped) ([]byte, error) {
	if err := ValidateTenant(tenant); err != nil {
		return nil, err
	}
	if w.KEKName != "local:"+tenant {
		return nil, fmt.Errorf("%w: wrapped by %q, not tenant %q's key", ErrUnwrap, w.KEKName, tenant)
	}
	kek, err := k.kek(tenant, w.KEKVersion, false)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	min := k.mu.file.MinVersions[tenant]
	k.mu.Unlock()
	if w.KEKVersion < min {
		return nil, fmt.Errorf("%w: tenant %q's KEK version %d is retired (versions below %d no longer unwrap)", ErrUnwrap, tenant, w.KEKVersion, min)
	}
	aead, err := keyringAEAD(kek.Key)
	if err != nil {
		return nil, err
	}
	if len(w.Ciphertext) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes", ErrUnwrap, len(w.Ciphertext))
	}
	n := aead.NonceSize()
	dek, err := aead.Open(nil, w.Ciphertext[:n], w.Ciphertext[n:], keyringAAD(tenant, kek.Version))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnwrap, err)
	}
	return dek, nil
}

func hasVersion(ks []keyringKE, version uint32) bool {
	for _, e := range ks {
		if e.Version == version {
			return true
		}
	}
	return false
}

// lockFile takes an exclusive advisory lock shared by every process using
// the keyring, and returns its release.
// lockReloaded takes the keyring's lock and the file's, and reads the
// file again; the returned func releases both.
func (k *Keyring) lockReloaded() (func(), error) {
	k.mu.Lock()
	unlock, err := k.lockFile()
	if err != nil {
		k.mu.Unlock()
		return nil, err
	}
	if err := k.reloadLocked(); err != nil {
		unlock()
		k.mu.Unlock()
		return nil, err
	}
	return func() { unlock(); k.mu.Unlock() }, nil
}

func (k *Keyring) lockFile() (func(), error) {
	f, err := os.OpenFile(k.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: keyring lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("keys: keyring lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// reloadLocked replaces the keys in memory with the file's: every process
// adds keys to the file under lockFile, so the file holds them all.
func (k *Keyring) reloadLocked() error {
	b, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("keys: keyring: %w", err)
	}
	f := keyringFile{}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("keys: keyring %s is corrupt: %w", k.path, err)
	}
	if f.Format != 1 {
		return fmt.Errorf("keys: keyring %s has unknown format %d", k.path, f.Format)
	}
	if f.KEKs == nil {
		f.KEKs = map[string][]keyringKE{}
	}
	k.mu.file = f
	return nil
}

// auditKey returns the audit log's signing key, making it on first use
// under the file's lock (another process may have made it meanwhile).
func (k *Keyring) auditKey() (ed25519.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.mu.file.AuditSeed) == 0 {
		unlock, err := k.lockFile()
		if err != nil {
			return nil, err
		}
		defer unlock()
		if err := k.reloadLocked(); err != nil {
			return nil, err
		}
		if len(k.mu.file.AuditSeed) == 0 {
			seed := make([]byte, ed25519.SeedSize)
			if _, err := rand.Read(seed); err != nil {
				return nil, fmt.Errorf("keys: %w", err)
			}
			k.mu.file.AuditSeed = seed
			if err := k.saveLocked(); err != nil {
				k.mu.file.AuditSeed = nil
				return nil, err
			}
		}
	}
	if len(k.mu.file.AuditSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("keys: keyring %s: the audit signing key is %d bytes, not %d", k.path, len(k.mu.file.AuditSeed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(k.mu.file.AuditSeed), nil
}

// AuditPublicKey implements AuditSigner.
func (k *Keyring) AuditPublicKey(context.Context) (ed25519.PublicKey, error) {
	key, err := k.auditKey()
	if err != nil {
		return nil, err
	}
	return key.Public().(ed25519.PublicKey), nil
}

// SignAudit implements AuditSigner.
func (k *Keyring) SignAudit(_ context.Context, msg []byte) ([]byte, error) {
	key, err := k.auditKey()
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(key, msg), nil
}

// RotateKEK implements Rotator: a new version, under the file's lock.
func (k *Keyring) RotateKEK(_ context.Context, tenant string) (uint32, error) {
	if err := ValidateTenant(tenant); err != nil {
		return 0, err
	}
	unlock, err := k.lockReloaded()
	if err != nil {
		return 0, err
	}
	defer unlock()
	ks := k.mu.file.KEKs[tenant]
	if len(ks) == 0 {
		return 0, fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
	}
	key := make([]byte, DEKSize)
	if _, err := rand.Read(key); err != nil {
		return 0, fmt.Errorf("keys: %w", err)
	}
	v := ks[len(ks)-1].Version + 1
	k.mu.file.KEKs[tenant] = append(ks, keyringKE{Version: v, Key: key})
	if err := k.saveLocked(); err != nil {
		k.mu.file.KEKs[tenant] = ks
		return 0, err
	}
	return v, nil
}

// KEKVersions implements Rotator, from the file as it is now.
func (k *Keyring) KEKVersions(_ context.Context, tenant string) (uint32, uint32, error) {
	unlock, err := k.lockReloaded()
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	ks := k.mu.file.KEKs[tenant]
	if len(ks) == 0 {
		return 0, 0, fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
	}
	return ks[len(ks)-1].Version, max(1, k.mu.file.MinVersions[tenant]), nil
}

// RewrapDataKeys implements Rotator.
func (k *Keyring) RewrapDataKeys(ctx context.Context, tenant string, ws []Wrapped) ([]Wrapped, error) {
	latest, err := k.kek(tenant, 0, false)
	if err != nil {
		return nil, err
	}
	aead, err := keyringAEAD(latest.Key)
	if err != nil {
		return nil, err
	}
	out := make([]Wrapped, len(ws))
	for i, w := range ws {
		dek, err := k.UnwrapDataKey(ctx, tenant, w)
		if err != nil {
			return nil, fmt.Errorf("keys: rewrap data key %d of %d: %w", i+1, len(ws), err)
		}
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+DEKSize+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		out[i] = Wrapped{KEKName: "local:" + tenant, KEKVersion: latest.Version, Ciphertext: aead.Seal(nonce, nonce, dek, keyringAAD(tenant, latest.Version))}
		clear(dek)
	}
	return out, nil
}

// DestroyKEK implements Destroyer: the tenant's KEK versions are removed
// from the file (rewritten in place under its lock) and the tenant is
// marked destroyed. Copies of the file elsewhere (backups) still hold
// them: destroy those too.
func (k *Keyring) DestroyKEK(_ context.Context, tenant string) error {
	if err := ValidateTenant(tenant); err != nil {
		return err
	}
	unlock, err := k.lockReloaded()
	if err != nil {
		return err
	}
	defer unlock()
	if _, ok := k.mu.file.Destroyed[tenant]; ok {
		return nil
	}
	if k.mu.file.Destroyed == nil {
		k.mu.file.Destroyed = map[string]string{}
	}
	for _, e := range k.mu.file.KEKs[tenant] {
		clear(e.Key)
	}
	delete(k.mu.file.KEKs, tenant)
	delete(k.mu.file.MinVersions, tenant)
	k.mu.file.Destroyed[tenant] = time.Now().UTC().Format(time.RFC3339)
	return k.saveLocked()
}

// RetireKEKVersions implements Rotator.
func (k *Keyring) RetireKEKVersions(_ context.Context, tenant string, min uint32) error {
	unlock, err := k.lockReloaded()
	if err != nil {
		return err
	}
	defer unlock()
	ks := k.mu.file.KEKs[tenant]
	if len(ks) == 0 {
		return fmt.Errorf("%w %q", ErrUnknownTenant, tenant)
	}
	if latest := ks[len(ks)-1].Version; min > latest {
		return fmt.Errorf("keys: tenant %q's latest KEK version is %d: versions up to it may be retired, not %d", tenant, latest, min)
	}
	if k.mu.file.MinVersions == nil {
		k.mu.file.MinVersions = map[string]uint32{}
	}
	if min <= k.mu.file.MinVersions[tenant] {
		return nil // never lowered: a retired version stays retired
	}
	k.mu.file.MinVersions[tenant] = min
	return k.saveLocked()
}
