package objstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// testStore is the contract every Store must meet. prefix keeps runs apart
// on a shared bucket.
func testStore(t *testing.T, s objstore.Store, prefix string) {
	ctx := context.Background()
	body := []byte(strings.Repeat("sealed recording bytes ", 1000))
	sum := sha256.Sum256(body)

	// Round trip with a declared digest.
	key := prefix + "/demo/2026/11/22/call-1/rec-1"
	info, err := s.Put(ctx, key, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: sum[:]})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if info.Size != int64(len(body)) || !bytes.Equal(info.SHA256, sum[:]) {
		t.Fatalf("Put info = %+v", info)
	}
	rc, ginfo, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Get returned %d bytes (err %v), want %d", len(got), err, len(body))
	}
	if !bytes.Equal(ginfo.SHA256, sum[:]) {
		t.Fatalf("Get SHA256 = %x, want %x", ginfo.SHA256, sum)
	}

	// Unretained objects can be deleted, and are then gone.
	if err := s.Delete(ctx, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := s.Get(ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get after delete: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(ctx, prefix+"/never-written"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}

	// Without a declared digest, the store says what it stored.
	ukey := prefix + "/demo/undeclared"
	if info, err := s.Put(ctx, ukey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{}); err != nil || !bytes.Equal(info.SHA256, sum[:]) {
		t.Fatalf("Put without a digest: %x, %v; want %x", info.SHA256, err, sum)
	}

	// A wrong declared digest stores nothing.
	bad := sha256.Sum256([]byte("other"))
	bkey := prefix + "/demo/bad-digest"
	if _, err := s.Put(ctx, bkey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: bad[:]}); !errors.Is(err, objstore.ErrChecksum) {
		t.Fatalf("Put with wrong digest: %v, want ErrChecksum", err)
	}
	if _, _, err := s.Get(ctx, bkey); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("object with wrong digest was kept: %v", err)
	}

	// A retained object: its delete is refused and the bytes stay.
	lkey := prefix + "/demo/locked"
	until := time.Now().Add(2 * time.Minute).Truncate(time.Second)
	if _, err := s.Put(ctx, lkey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: sum[:], RetainUntil: until}); err != nil {
		t.Fatalf("Put locked: %v", err)
	}
	err = s.Delete(ctx, lkey)
	if !errors.Is(err, objstore.ErrRetained) {
		t.Fatalf("Delete of locked object: %v, want ErrRetained", err)
	}
	t.Logf("delete of locked object refused: %v", err)
	rc, linfo, err := s.Get(ctx, lkey)
	if err != nil {
		t.Fatalf("Get locked after refused delete: %v", err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, body) {
		t.Fatal("locked object changed")
	}
	if !linfo.RetainUntil.Equal(until.UTC()) {
		t.Fatalf("RetainUntil = %v, want %v", linfo.RetainUntil, until.UTC())
	}

	// Every version of a key goes with its delete: a key written twice
	// (a retried upload) leaves nothing behind.
	vkey := prefix + "/demo/twice"
	for range 2 {
		if _, err := s.Put(ctx, vkey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: sum[:]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, vkey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, vkey); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Stat after deleting both versions: %v, want ErrNotFound", err)
	}

	// A legal hold refuses the delete of an object whose retention has
	// passed (or that has none), until it is cleared.
	hkey := prefix + "/demo/held"
	if _, err := s.Put(ctx, hkey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: sum[:]}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLegalHold(ctx, hkey, true); err != nil {
		t.Fatalf("SetLegalHold: %v", err)
	}
	if st, err := s.Stat(ctx, hkey); err != nil || !st.LegalHold || st.Size != int64(len(body)) {
		t.Fatalf("Stat of a held object: %+v, %v", st, err)
	}
	if err := s.Delete(ctx, hkey); !errors.Is(err, objstore.ErrHeld) {
		t.Fatalf("Delete of a held object: %v, want ErrHeld", err)
	}
	if err := s.SetLegalHold(ctx, hkey, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, hkey); err != nil {
		t.Fatalf("Delete once the hold is cleared: %v", err)
	}
	if st, err := s.Stat(ctx, lkey); err != nil || !st.RetainUntil.Equal(until.UTC()) || st.LegalHold {
		t.Fatalf("Stat of the locked object: %+v, %v", st, err)
	}
	// Retention is extended, never shortened.
	later := until.Add(time.Minute)
	if err := s.ExtendRetention(ctx, lkey, later); err != nil {
		t.Fatalf("ExtendRetention: %v", err)
	}
	if err := s.ExtendRetention(ctx, lkey, until.Add(-time.Minute)); err != nil {
		t.Fatalf("ExtendRetention to an earlier time: %v", err)
	}
	if st, err := s.Stat(ctx, lkey); err != nil || !st.RetainUntil.Equal(later.UTC()) {
		t.Fatalf("Stat after extending the lock: %+v, %v, want until %v", st, err, later.UTC())
	}
	xkey := prefix + "/demo/unlocked-then-locked"
	if _, err := s.Put(ctx, xkey, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{SHA256: sum[:]}); err != nil {
		t.Fatal(err)
	}
	if err := s.ExtendRetention(ctx, xkey, until); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, xkey); !errors.Is(err, objstore.ErrRetained) {
		t.Fatalf("Delete of an object locked after its upload: %v, want ErrRetained", err)
	}

	// List: the objects under a prefix, and no others.
	for _, k := range []string{prefix + "/list/b/2", prefix + "/list/a/1", prefix + "/listx/1"} {
		if _, err := s.Put(ctx, k, bytes.NewReader(body), int64(len(body)), objstore.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", k, err)
		}
	}
	if got, err := s.List(ctx, prefix+"/list/"); err != nil || strings.Join(got, " ") != prefix+"/list/a/1 "+prefix+"/list/b/2" {
		t.Fatalf("List: %q %v", got, err)
	}
	if err := s.Delete(ctx, prefix+"/list/a/1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(ctx, prefix+"/list/"); err != nil || strings.Join(got, " ") != prefix+"/list/b/2" {
		t.Fatalf("List after a delete: %q %v", got, err)
	}
	if got, err := s.List(ctx, prefix+"/nothing/"); err != nil || len(got) != 0 {
		t.Fatalf("List of an empty prefix: %q %v", got, err)
	}
	if _, err := s.List(ctx, prefix+"/list"); err == nil {
		t.Fatal("List accepted a prefix without a trailing slash")
	}

	for _, k := range []string{"", "/abs", "a/../b", "a//b", "a\\b", "trail/"} {
		if _, err := s.Put(ctx, k, bytes.NewReader(nil), 0, objstore.PutOptions{}); err == nil {
			t.Fatalf("Put accepted invalid key %q", k)
		}
	}
}

func TestFS(t *testing.T) {
	s, err := objstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s, "t")
}

// TestS3 runs the contract against the local stack's MinIO bucket, which
// has object lock: the locked object's delete is refused by the server.
func TestS3(t *testing.T) {
	cfg := objstore.S3Config{
		Endpoint:  stacktest.Env(t, "VERBATIM_S3_ENDPOINT"),
		Bucket:    stacktest.Env(t, "VERBATIM_S3_BUCKET"),
		AccessKey: stacktest.Env(t, "VERBATIM_S3_ACCESS_KEY"),
		SecretKey: stacktest.Env(t, "VERBATIM_S3_SECRET_KEY"),
		Insecure:  os.Getenv("VERBATIM_S3_INSECURE") == "true",
		CAFile:    os.Getenv("VERBATIM_S3_CA"),
	}
	ctx := context.Background()
	s, err := objstore.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "test-" + time.Now().UTC().Format("20060102T150405.000000000")
	testStore(t, s, prefix)

	// Nor may the app's own credentials remove the locked version
	// directly, even asking to bypass governance: the lock is compliance
	// mode.
	mopts := &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Secure: !cfg.Insecure}
	if cfg.CAFile != "" && !cfg.Insecure {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		mopts.Transport = tr
	}
	mc, err := minio.New(cfg.Endpoint, mopts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := mc.StatObject(ctx, cfg.Bucket, prefix+"/demo/locked", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.RemoveObject(ctx, cfg.Bucket, prefix+"/demo/locked", minio.RemoveObjectOptions{VersionID: st.VersionID, GovernanceBypass: true}); err == nil {
		t.Fatal("the locked version was removed through S3 with the app's credentials")
	} else {
		t.Logf("S3 removal of the locked version refused: %v", err)
	}
	if mode, until, err := mc.GetObjectRetention(ctx, cfg.Bucket, prefix+"/demo/locked", st.VersionID); err != nil || mode == nil || *mode != minio.Compliance || until == nil {
		t.Fatalf("retention: %v %v %v", mode, until, err)
	}

	bad := cfg
	bad.SecretKey = "wrong"
	if _, err := objstore.NewS3(ctx, bad); err == nil {
		t.Fatal("wrong secret key accepted")
	}
}
