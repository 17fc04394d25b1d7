package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const metaSuffix = ".meta.json"

// FS is a Store in a local directory. Each object is a read-only file with a
// sidecar holding its digest and retention. Retention is enforced by this
// process, not by the kernel: it protects against mistakes, not against root.
type FS struct {
	root string
	now  func() time.Time
}

var _ Store = (*FS)(nil)

// NewFS returns a Store rooted at dir, which is created if needed.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	return &FS{root: dir, now: time.Now}, nil
}

type fsMeta struct {
	Size        int64     `json:"size"`
	SHA256      []byte    `json:"sha256"`
	RetainUntil time.Time `json:"retain_until,omitzero"`
	ContentType string    `json:"content_type"`
	LegalHold   bool      `json:"legal_hold,omitempty"`
}

func (s *FS) paths(key string) (data, meta string) {
	data = filepath.Join(s.root, filepath.FromSlash(key))
	return data, data + metaSuffix
}

func (s *FS) readMeta(key string) (fsMeta, error) {
	_, mp := s.paths(key)
	b, err := os.ReadFile(mp)
	if errors.Is(err, fs.ErrNotExist) {
		return fsMeta{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return fsMeta{}, fmt.Errorf("objstore: %w", err)
	}
	var m fsMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return fsMeta{}, fmt.Errorf("objstore: metadata of %s is corrupt: %w", key, err)
	}
	return m, nil
}

func (s *FS) retained(key string) error {
	m, err := s.readMeta(key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.now().Before(m.RetainUntil) {
		return fmt.Errorf("%w: %s until %s", ErrRetained, key, m.RetainUntil.UTC().Format(time.RFC3339))
	}
	if m.LegalHold {
		return fmt.Errorf("%w: %s", ErrHeld, key)
	}
	return nil
}

// Stat implements Store.
func (s *FS) Stat(_ context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	m, err := s.readMeta(key)
	if err != nil {
		return Info{}, err
	}
	return Info{Key: key, Size: m.Size, SHA256: m.SHA256, RetainUntil: m.RetainUntil, LegalHold: m.LegalHold}, nil
}

// ExtendRetention implements Store.
func (s *FS) ExtendRetention(_ context.Context, key string, until time.Time) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	m, err := s.readMeta(key)
	if err != nil {
		return err
	}
	if !until.After(m.RetainUntil) {
		return nil
	}
	m.RetainUntil = until.UTC()
	mb, _ := json.Marshal(m)
	_, mp := s.paths(key)
	return writeFileAtomic(mp, mb)
}

// SetLegalHold implements Store.
func (s *FS) SetLegalHold(_ context.Context, key string, on bool) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	m, err := s.readMeta(key)
	if err != nil {
		return err
	}
	m.LegalHold = on
	mb, _ := json.Marshal(m)
	_, mp := s.paths(key)
	return writeFileAtomic(mp, mb)
}

// Put implements Store. The object appears atomically, complete or not at all.
func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := s.retained(key); err != nil {
		return Info{}, err
	}
	dp, mp := s.paths(key)
	if err := os.MkdirAll(filepath.Dir(dp), 0o700); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dp), ".put-*")
	if err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: r})
	if err == nil && n != size {
		err = fmt.Errorf("objstore: %s: read %d bytes, declared %d", key, n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Info{}, err
	}
	sum := h.Sum(nil)
	if opts.SHA256 != nil && !bytes.Equal(sum, opts.SHA256) {
		return Info{}, fmt.Errorf("%w: %s: got %x, declared %x", ErrChecksum, key, sum, opts.SHA256)
	}
	ct := opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	m := fsMeta{Size: n, SHA256: sum, RetainUntil: opts.RetainUntil.UTC(), ContentType: ct}
	mb, _ := json.Marshal(m)
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	// Data first, then metadata: an object exists only once its metadata does.
	if err := os.Rename(tmp.Name(), dp); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	if err := writeFileAtomic(mp, mb); err != nil {
		return Info{}, err
	}
	return Info{Key: key, Size: n, SHA256: sum, RetainUntil: m.RetainUntil}, nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *FS) Get(_ context.Context, key string) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	m, err := s.readMeta(key)
	if err != nil {
		return nil, Info{}, err
	}
	dp, _ := s.paths(key)
	f, err := os.Open(dp)
	if err != nil {
		return nil, Info{}, fmt.Errorf("objstore: %s: %w", key, err)
	}
	return f, Info{Key: key, Size: m.Size, SHA256: m.SHA256, RetainUntil: m.RetainUntil, LegalHold: m.LegalHold}, nil
}

// Delete implements Store.
func (s *FS) Delete(_ context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := s.readMeta(key); err != nil {
		return err
	}
	if err := s.retained(key); err != nil {
		return err
	}
	dp, mp := s.paths(key)
	if err := os.Remove(mp); err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	if err := os.Remove(dp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objstore: %w", err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context //nolint:containedctx // scoped to one Put call
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// List implements Store: the objects' sidecars under the prefix's
// directory.
func (s *FS) List(_ context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	var keys []string
	dir := filepath.Join(s.root, filepath.FromSlash(prefix))
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == dir {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, metaSuffix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, strings.TrimSuffix(p, metaSuffix))
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: list %s: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}
