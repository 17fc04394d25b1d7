// Package playback opens a stored recording for a listener: it finds the
// recording's key in the key registry, unwraps it with the key manager,
// fetches the sealed object and decrypts it, checking the SHA-256 of the
// ciphertext and of the plaintext against what the recording announced.
// `verbatim play` and the API's playback share it.
package playback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/verbatimrec/verbatim/internal/keyreg"
	"github.com/verbatimrec/verbatim/internal/keys"
	"github.com/verbatimrec/verbatim/internal/objstore"
	"github.com/verbatimrec/verbatim/processors"
)

// Object is one sealed object of a recording (the WAV, or a stream kept
// in its own codec) and the digests its RecordingStored announced, in hex.
type Object struct {
	Key                               string
	CiphertextSHA256, PlaintextSHA256 string
}

// Opener decrypts recordings.
type Opener struct {
	Keys     keys.Manager
	Store    objstore.Store
	Registry *keyreg.Registry
	// KeyWait bounds the wait for a recording's key in the registry.
	// Default 30 s.
	KeyWait time.Duration
}

// Decrypt writes the plaintext of obj, sealed under the tenant's
// recording key keyID, to w, and returns its size. It fails if either
// digest differs from the announced one; w then holds bytes that must not
// be given to anyone.
func (o *Opener) Decrypt(ctx context.Context, tenant, keyID string, obj Object, w io.Writer) (int64, error) {
	wait := o.KeyWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	kctx, cancel := context.WithTimeout(ctx, wait)
	dk, err := o.Registry.Get(kctx, tenant, keyID)
	cancel()
	if err != nil {
		return 0, err
	}
	plainKey, err := o.Keys.UnwrapDataKey(ctx, tenant, keys.Wrapped{KEKName: dk.GetKekName(), KEKVersion: dk.GetKekVersion(), Ciphertext: dk.GetWrappedDek()})
	if err != nil {
		return 0, fmt.Errorf("unwrap the recording key: %w", err)
	}
	rc, _, err := o.Store.Get(ctx, obj.Key)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	cipherSum := sha256.New()
	plain, err := processors.OpenRecording(io.TeeReader(rc, cipherSum), plainKey, tenant, obj.Key)
	if err != nil {
		return 0, err
	}
	plainSum := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, plainSum), plain)
	if err != nil {
		return n, fmt.Errorf("decrypt %s: %w", obj.Key, err)
	}
	if got := hex.EncodeToString(cipherSum.Sum(nil)); got != obj.CiphertextSHA256 {
		return n, fmt.Errorf("stored object %s has SHA-256 %s, but %s was recorded: refusing it", obj.Key, got, obj.CiphertextSHA256)
	}
	if got := hex.EncodeToString(plainSum.Sum(nil)); got != obj.PlaintextSHA256 {
		return n, fmt.Errorf("decrypted recording has SHA-256 %s, but %s was recorded: refusing it", got, obj.PlaintextSHA256)
	}
	return n, nil
}
