package keys_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/internal/keys"
)

// TestReadSecretFile: the owner's file is read and trimmed; a file others
// may read, an empty one and a missing one are refused with the reason.
func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := keys.ReadSecretFile(write("ok", "  s.token\n", 0o600), "token"); err != nil || s != "s.token" {
		t.Fatalf("%q %v", s, err)
	}
	for name, c := range map[string]struct {
		path, want string
	}{
		"group-readable": {write("g", "x", 0o640), "readable by others"},
		"world-readable": {write("w", "x", 0o604), "readable by others"},
		"empty":          {write("e", "\n", 0o600), "is empty"},
		"missing":        {filepath.Join(dir, "none"), "no such file"},
	} {
		if _, err := keys.ReadSecretFile(c.path, "token"); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "token: ") {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
