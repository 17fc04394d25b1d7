// Package stacktest gates integration tests on the real local stack
// (deploy/local). Tests call Env for each setting they need: without
// VERBATIM_INTEGRATION=1 the test is skipped; with it, a missing setting
// fails the test, so a misconfigured CI run cannot pass by skipping.
package stacktest

import (
	"os"
	"path/filepath"
	"testing"
)

// Env returns the value of the environment variable name, skipping the test
// when integration tests are off and failing it when the variable is unset.
func Env(t testing.TB, name string) string {
	t.Helper()
	if os.Getenv("VERBATIM_INTEGRATION") != "1" {
		t.Skip("integration test: run `make test`, or source .stack/env.sh and set VERBATIM_INTEGRATION=1")
	}
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("VERBATIM_INTEGRATION=1 but %s is not set: source the env.sh that `make up` writes", name)
	}
	return v
}

// SharedTestdata returns the path of a file in ../shared/testdata, the
// third-party captures and vectors beside the repository (described in its
// MANIFEST.md). It fails the test when the folder is not there.
func SharedTestdata(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data missing (the repository expects ../shared/testdata beside it): %v", err)
	}
	return p
}
