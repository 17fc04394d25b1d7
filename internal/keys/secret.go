package keys

import (
	"fmt"
	"os"
	"strings"
)

// ReadSecretFile reads a secret (a token, a key) from a file that only
// its owner may read, trimmed of surrounding white space. Secrets come
// from files or the environment, never the command line, where every
// user of the machine sees them in ps. what names the secret in errors.
func ReadSecretFile(path, what string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s: %s is readable by others (mode %v): chmod 600 it", what, path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", what, path)
	}
	return s, nil
}
