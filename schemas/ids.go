package schemas

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// RandomID returns a random (version 4) UUID for ce_id and call ids.
func RandomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return formatUUID(b, 0x40)
}

// DerivedID returns a UUID-shaped id (version 5 layout, SHA-256) derived
// from parts, so producing the same input twice yields the same call and
// event ids and consumers deduplicate them.
func DerivedID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var b [16]byte
	copy(b[:], h.Sum(nil))
	return formatUUID(b, 0x50)
}

func formatUUID(b [16]byte, version byte) string {
	b[6] = b[6]&0x0f | version
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
