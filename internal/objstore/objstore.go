// Package objstore stores sealed recordings as objects. The Store seam has
// two real implementations: S3 (any server that speaks the S3 API with
// object lock: AWS S3, MinIO, Ceph RGW) and a local filesystem for the
// embedded default. A contract suite runs against both.
//
// Objects under retention are immutable: neither implementation lets a
// retained object be deleted or overwritten before its retain-until time.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned for a key that has no object.
var ErrNotFound = errors.New("objstore: object not found")

// ErrRetained is returned when object lock refuses a delete or overwrite.
var ErrRetained = errors.New("objstore: object is under retention")

// ErrHeld is returned when a legal hold refuses a delete or overwrite.
var ErrHeld = errors.New("objstore: object is under legal hold")

// ErrChecksum is returned when stored bytes do not match the SHA-256 the
// writer declared.
var ErrChecksum = errors.New("objstore: checksum mismatch")

// Store keeps immutable objects. Implementations are safe for concurrent use.
type Store interface {
	// Put writes size bytes from r under key. If opts.SHA256 is set the
	// store verifies it and fails with ErrChecksum on mismatch, storing
	// nothing.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Info, error)
	// Get opens the object for reading; the caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Delete removes the object's data for good, every version of it, or
	// fails with ErrRetained or ErrHeld and removes none.
	Delete(ctx context.Context, key string) error
	// Stat describes the object without reading it.
	Stat(ctx context.Context, key string) (Info, error)
	// SetLegalHold sets or clears the legal hold of every version of the
	// object: while it is set, nothing deletes the object, whatever its
	// retention.
	SetLegalHold(ctx context.Context, key string, on bool) error
	// ExtendRetention locks every version of the object (compliance
	// mode) until at least until; a version locked longer is left as it
	// is: retention is never shortened.
	ExtendRetention(ctx context.Context, key string, until time.Time) error
	// List returns the keys of the objects under prefix (a key prefix
	// ending in "/"), sorted: those with a live version.
	List(ctx context.Context, prefix string) ([]string, error)
}

// PutOptions says how to store an object.
type PutOptions struct {
	// RetainUntil, if set, locks the object (compliance mode) until then.
	RetainUntil time.Time
	// SHA256 is the expected digest of the bytes; verified when set.
	SHA256 []byte
	// ContentType defaults to application/octet-stream.
	ContentType string
}

// Info describes a stored object.
type Info struct {
	Key         string
	Size        int64
	SHA256      []byte
	RetainUntil time.Time
	// LegalHold is set while a legal hold keeps the object.
	LegalHold bool
}

// ValidateKey rejects keys that could escape a tenant prefix or that S3 and
// filesystems treat differently.
func ValidateKey(key string) error {
	switch {
	case key == "" || len(key) > 900:
		return fmt.Errorf("objstore: invalid key length %d", len(key))
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/"):
		return fmt.Errorf("objstore: key %q must not start or end with /", key)
	case strings.ContainsAny(key, "\\\x00"):
		return fmt.Errorf("objstore: key %q has a forbidden character", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.HasSuffix(seg, metaSuffix) {
			return fmt.Errorf("objstore: key %q has an invalid segment %q", key, seg)
		}
	}
	return nil
}

// validatePrefix accepts a key prefix that names a directory: a valid key
// followed by "/".
func validatePrefix(prefix string) error {
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("objstore: prefix %q does not end in /", prefix)
	}
	return ValidateKey(strings.TrimSuffix(prefix, "/"))
}
