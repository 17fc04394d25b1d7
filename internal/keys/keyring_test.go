package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/verbatimrec/verbatim/internal/keys"
)

// TestKeyringSharedByProcesses: two keyrings on one file, as `verbatim dev`
// and `verbatim ingest` have. A KEK one creates is found by the other, and
// KEKs created concurrently by both are all kept.
func TestKeyringSharedByProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyring.json")
	a, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := b.GenerateDataKey(ctx, "demo") // b creates demo's KEK
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.UnwrapDataKey(ctx, "demo", dk.Wrapped); err != nil || !bytes.Equal(got, dk.Plaintext) {
		t.Fatalf("a cannot unwrap b's key: %v", err)
	}
	var wg sync.WaitGroup
	wrapped := make([]keys.Wrapped, 20)
	for i := range wrapped {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := a
			if i%2 == 1 {
				k = b
			}
			d, err := k.GenerateDataKey(ctx, fmt.Sprintf("t%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			wrapped[i] = d.Wrapped
		}()
	}
	wg.Wait()
	c, err := keys.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range wrapped {
		if _, err := c.UnwrapDataKey(ctx, fmt.Sprintf("t%d", i), w); err != nil {
			t.Fatalf("KEK of t%d lost: %v", i, err)
		}
	}
}
