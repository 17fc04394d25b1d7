package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// sessionKeys are the keys of the communication session a call records:
// one for each RFC 7989 UUID a Session-ID value names (the null UUID
// aside), and one for its SIP Call-ID. A Session-ID is end to end across
// B2BUAs and SBCs, so passive capture on either side of an SBC and the
// SBC's SIPREC fork share its UUIDs; a Call-ID only links the same leg.
// Hashed with the tenant: the keys are compared, never read.
func sessionKeys(tenant string, sessionIDs []string, callIDs []string) []string {
	var keys []string
	add := func(kind, v string) {
		h := sha256.Sum256([]byte(tenant + "\x00" + kind + "\x00" + v))
		k := "sk-" + hex.EncodeToString(h[:16])
		for _, o := range keys {
			if o == k {
				return
			}
		}
		keys = append(keys, k)
	}
	for _, sid := range sessionIDs {
		for _, u := range sessionUUIDs(sid) {
			add("session-id", u)
		}
	}
	for _, id := range callIDs {
		if id = strings.TrimSpace(id); id != "" {
			add("call-id", id)
		}
	}
	return keys
}

// sessionUUIDs returns the UUIDs of an RFC 7989 Session-ID value
// ("local-uuid;remote=remote-uuid"), lower case, without the null UUID;
// nothing if the value is not of that form.
func sessionUUIDs(v string) []string {
	var out []string
	parts := strings.Split(v, ";")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if i > 0 {
			name, val, ok := strings.Cut(p, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "remote") {
				continue
			}
			p = strings.TrimSpace(val)
		}
		if !isUUID32(p) {
			if i == 0 {
				return nil
			}
			continue
		}
		if p = strings.ToLower(p); p != strings.Repeat("0", 32) {
			out = append(out, p)
		}
	}
	return out
}

func isUUID32(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
