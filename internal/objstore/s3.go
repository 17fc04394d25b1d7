package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures an S3 store. Only the S3 API is used (object lock,
// checksums), so any compatible server works.
type S3Config struct {
	// Endpoint is host:port, e.g. "s3.eu-west-1.amazonaws.com". Required.
	Endpoint string
	// Bucket must exist with object lock enabled. Required.
	Bucket string
	// AccessKey and SecretKey are static credentials. Required.
	AccessKey, SecretKey string
	// Region, default "us-east-1".
	Region string
	// Insecure uses plain HTTP; for the loopback dev stack only.
	Insecure bool
	// CAFile is a PEM file of the CA(s) the endpoint's certificate is
	// checked against, where it is not a public one.
	CAFile string
}

// caTransport is an HTTP transport that trusts the CAs of file.
func caTransport(file string) (*http.Transport, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("objstore: s3 CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("objstore: s3 CA %s holds no certificate", file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// Validate reports missing settings.
func (c S3Config) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("objstore: s3 endpoint is required"))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("objstore: s3 bucket is required"))
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		errs = append(errs, errors.New("objstore: s3 access key and secret key are required"))
	}
	return errors.Join(errs...)
}

// String redacts the secret key.
func (c S3Config) String() string {
	return fmt.Sprintf("S3Config{Endpoint:%s Bucket:%s AccessKey:%s SecretKey:REDACTED}", c.Endpoint, c.Bucket, c.AccessKey)
}

// S3 is a Store on an S3 bucket with object lock. Retained objects are put
// in COMPLIANCE mode, which not even the bucket owner can shorten.
type S3 struct {
	cfg S3Config
	c   *minio.Client
}

var _ Store = (*S3)(nil)

const metaSHA256 = "Verbatim-Sha256"

// NewS3 returns an S3 store and checks that the bucket has object lock.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	opts := &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
		// Stream the SHA-256 checksum as a trailer instead of buffering.
		TrailingHeaders: true,
	}
	if cfg.CAFile != "" && !cfg.Insecure {
		tr, err := caTransport(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		opts.Transport = tr
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("objstore: s3 client: %w", err)
	}
	enabled, _, _, _, err := c.GetObjectLockConfig(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("objstore: bucket %s: object lock config: %w", cfg.Bucket, err)
	}
	if enabled != "Enabled" {
		return nil, fmt.Errorf("objstore: bucket %s does not have object lock enabled", cfg.Bucket)
	}
	return &S3{cfg: cfg, c: c}, nil
}

// Put implements Store. The SHA-256 is sent as the S3 checksum, so the
// server rejects a body that does not match it.
//
// When the caller declares the digest (a recording's is computed as it is
// sealed), it goes in the signed x-amz-checksum-sha256 header and the body
// is sent unsigned: the server checks the body against a digest the
// signature covers, and neither side hashes the bytes again. Otherwise the
// checksum is computed while streaming, sent as a trailer and returned by
// the server. Over plain HTTP (the local stack) minio-go also signs every
// chunk, one more SHA-256 pass; with TLS, as production runs, it does not.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	po := minio.PutObjectOptions{
		ContentType:      opts.ContentType,
		DisableMultipart: true,
	}
	if !opts.RetainUntil.IsZero() {
		po.Mode = minio.Compliance
		po.RetainUntilDate = opts.RetainUntil.UTC()
	}
	if opts.SHA256 != nil {
		po.UserMetadata = map[string]string{metaSHA256: hex.EncodeToString(opts.SHA256),
			"X-Amz-Checksum-Sha256": base64.StdEncoding.EncodeToString(opts.SHA256)}
		po.DisableContentSha256 = true
		ui, err := s.c.PutObject(ctx, s.cfg.Bucket, key, r, size, po)
		if err != nil {
			return Info{}, fmt.Errorf("objstore: put %s: %w", key, classify(err))
		}
		return Info{Key: key, Size: ui.Size, SHA256: bytes.Clone(opts.SHA256), RetainUntil: opts.RetainUntil.UTC()}, nil
	}
	// minio-go computes the SHA-256 as it streams and sends it as a
	// trailer the server checks; the digest comes back in the response.
	po.Checksum = minio.ChecksumSHA256
	ui, err := s.c.PutObject(ctx, s.cfg.Bucket, key, r, size, po)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", key, classify(err))
	}
	sum, err := base64.StdEncoding.DecodeString(ui.ChecksumSHA256)
	if err != nil || len(sum) != sha256.Size {
		return Info{}, fmt.Errorf("objstore: put %s: the server returned no SHA-256 checksum (%q)", key, ui.ChecksumSHA256)
	}
	return Info{Key: key, Size: ui.Size, SHA256: sum, RetainUntil: opts.RetainUntil.UTC()}, nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	obj, err := s.c.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", key, classify(err))
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", key, classify(err))
	}
	info := Info{Key: key, Size: st.Size}
	if v := st.UserMetadata[metaSHA256]; v != "" {
		info.SHA256, _ = hex.DecodeString(v)
	}
	if st.ChecksumSHA256 != "" && info.SHA256 == nil {
		info.SHA256, _ = base64.StdEncoding.DecodeString(st.ChecksumSHA256)
	}
	if _, until, err := s.c.GetObjectRetention(ctx, s.cfg.Bucket, key, st.VersionID); err == nil && until != nil {
		info.RetainUntil = until.UTC()
	}
	return obj, info, nil
}

// versions lists every version of key (not of keys it prefixes), newest
// first; delete markers are skipped.
func (s *S3) versions(ctx context.Context, key string) ([]minio.ObjectInfo, error) {
	var vs []minio.ObjectInfo
	for o := range s.c.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("objstore: versions of %s: %w", key, classify(o.Err))
		}
		if o.Key == key && !o.IsDeleteMarker {
			vs = append(vs, o)
		}
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return vs, nil
}

// lock reads one version's retention and legal hold.
func (s *S3) lock(ctx context.Context, key, version string) (until time.Time, held bool, err error) {
	if _, u, err := s.c.GetObjectRetention(ctx, s.cfg.Bucket, key, version); err == nil && u != nil {
		until = u.UTC()
	} else if err != nil && !noLock(err) {
		return time.Time{}, false, fmt.Errorf("objstore: retention of %s: %w", key, classify(err))
	}
	st, err := s.c.GetObjectLegalHold(ctx, s.cfg.Bucket, key, minio.GetObjectLegalHoldOptions{VersionID: version})
	if err != nil && !noLock(err) {
		return time.Time{}, false, fmt.Errorf("objstore: legal hold of %s: %w", key, classify(err))
	}
	return until, err == nil && st != nil && *st == minio.LegalHoldEnabled, nil
}

// noLock reports an S3 answer meaning "no retention (or legal hold) is
// set on this version".
func noLock(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && (er.Code == "NoSuchObjectLockConfiguration" || er.Code == "ObjectLockConfigurationNotFoundError" ||
		er.Code == "NoSuchObjectLegalHold" || er.Code == "InvalidRequest")
}

// Stat implements Store: the newest version's size, digest, retention and
// legal hold (held when any version is).
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	vs, err := s.versions(ctx, key)
	if err != nil {
		return Info{}, err
	}
	st, err := s.c.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{VersionID: vs[0].VersionID})
	if err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s: %w", key, classify(err))
	}
	info := Info{Key: key, Size: st.Size}
	if v := st.UserMetadata[metaSHA256]; v != "" {
		info.SHA256, _ = hex.DecodeString(v)
	}
	for _, v := range vs {
		until, held, err := s.lock(ctx, key, v.VersionID)
		if err != nil {
			return Info{}, err
		}
		if until.After(info.RetainUntil) {
			info.RetainUntil = until
		}
		info.LegalHold = info.LegalHold || held
	}
	return info, nil
}

// SetLegalHold implements Store.
func (s *S3) SetLegalHold(ctx context.Context, key string, on bool) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	vs, err := s.versions(ctx, key)
	if err != nil {
		return err
	}
	status := minio.LegalHoldDisabled
	if on {
		status = minio.LegalHoldEnabled
	}
	for _, v := range vs {
		if err := s.c.PutObjectLegalHold(ctx, s.cfg.Bucket, key, minio.PutObjectLegalHoldOptions{VersionID: v.VersionID, Status: &status}); err != nil {
			return fmt.Errorf("objstore: legal hold of %s: %w", key, classify(err))
		}
	}
	return nil
}

// ExtendRetention implements Store.
func (s *S3) ExtendRetention(ctx context.Context, key string, until time.Time) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	vs, err := s.versions(ctx, key)
	if err != nil {
		return err
	}
	mode := minio.Compliance
	until = until.UTC()
	for _, v := range vs {
		cur, _, err := s.lock(ctx, key, v.VersionID)
		if err != nil {
			return err
		}
		if !until.After(cur) {
			continue
		}
		if err := s.c.PutObjectRetention(ctx, s.cfg.Bucket, key, minio.PutObjectRetentionOptions{VersionID: v.VersionID, Mode: &mode, RetainUntilDate: &until}); err != nil {
			return fmt.Errorf("objstore: retention of %s: %w", key, classify(err))
		}
	}
	return nil
}

// Delete implements Store. It deletes every version itself (not just
// adding a delete marker), which object lock refuses while one is
// retained or held: then none is deleted.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	vs, err := s.versions(ctx, key)
	if err != nil {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	for _, v := range vs {
		until, held, err := s.lock(ctx, key, v.VersionID)
		switch {
		case err != nil:
			return err
		case until.After(time.Now()):
			return fmt.Errorf("%w: %s until %s", ErrRetained, key, until.Format(time.RFC3339))
		case held:
			return fmt.Errorf("%w: %s", ErrHeld, key)
		}
	}
	for _, v := range vs {
		if err := s.c.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: v.VersionID}); err != nil {
			// Object lock refusals are AccessDenied on S3 and MinIO alike;
			// tell them from missing permissions by the version's lock.
			if until, held, lerr := s.lock(ctx, key, v.VersionID); lerr == nil && (until.After(time.Now()) || held) {
				return fmt.Errorf("%w: %s (until %s, legal hold %v): %w", ErrRetained, key, until.Format(time.RFC3339), held, err)
			}
			return fmt.Errorf("objstore: delete %s: %w", key, classify(err))
		}
	}
	return nil
}

// classify maps S3 error codes onto the package's sentinels.
func classify(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		return err
	}
	switch {
	case er.Code == "NoSuchKey" || er.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w (%s)", ErrNotFound, er.Code)
	case er.Code == "XAmzContentChecksumMismatch" || er.Code == "BadDigest":
		return fmt.Errorf("%w: %s", ErrChecksum, er.Message)
	}
	return err
}

// List implements Store: the bucket's listing of the prefix, latest
// versions only (a deleted object's delete marker hides it).
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	var keys []string
	for o := range s.c.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("objstore: list %s: %w", prefix, classify(o.Err))
		}
		keys = append(keys, o.Key)
	}
	slices.Sort(keys)
	return keys, nil
}
