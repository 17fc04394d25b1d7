package devstack_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/internal/devstack"
)

func TestSelfCheckAndRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // as a user's umask makes it
		t.Fatal(err)
	}
	s, err := devstack.Start(ctx, devstack.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// The broker's log files are 0644: the data directory keeps others out.
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("the data directory is %v (%v), want 0700", st.Mode().Perm(), err)
	}
	var out bytes.Buffer
	if err := s.SelfCheck(ctx, &out, "demo"); err != nil {
		t.Fatalf("SelfCheck: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	s.Close()

	// The embedded broker persists: a restart on the same directory works
	// and the sealed identity written before is still plaintext-free on disk.
	s2, err := devstack.Start(ctx, devstack.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s2.Close()
	if err := s2.SelfCheck(ctx, &out, "demo"); err != nil {
		t.Fatalf("SelfCheck after restart: %v", err)
	}
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, secret := range []string{"alice@example.com", "+15551234567"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s holds plaintext %q", p, secret)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "kafka"))
	if len(entries) == 0 {
		t.Fatal("embedded broker wrote nothing to its data directory")
	}
}
