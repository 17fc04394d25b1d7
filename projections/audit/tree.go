// Package audit is Verbatim's tamper-evident audit log: the projection
// that appends every event of verbatim.audit.v1, in order, to one
// RFC 6962 Merkle tree per tenant (golang.org/x/mod/sumdb/tlog), keeps
// the entries and the tree's stored hashes in ClickHouse for queries and
// proofs, and writes signed checkpoints (C2SP signed notes, ed25519, the
// key held by the key manager) to object storage under object lock; and
// the verifier, the inclusion and consistency proofs built on them.
//
// A leaf is an event's bytes exactly as the topic holds them (the
// protobuf AuditEvent the producer committed): nothing is re-encoded, so
// anyone holding the topic or the table recomputes the same tree.
package audit

import (
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// tree is one tenant's log in memory: its size and the stored hashes of
// its peaks (the complete subtrees of its size), which are all that
// appending a record and computing the root read.
type tree struct {
	size   int64
	hashes map[int64]tlog.Hash // stored hash index -> hash
}

func newTree() *tree { return &tree{hashes: map[int64]tlog.Hash{}} }

// ReadHashes implements tlog.HashReader over the peaks held.
func (t *tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := t.hashes[x]
		if !ok {
			return nil, fmt.Errorf("audit: stored hash %d is not a peak of a tree of size %d", x, t.size)
		}
		out[i] = h
	}
	return out, nil
}

// peaks are the stored-hash indexes of the complete subtrees of a tree
// of n records, largest first.
func peaks(n int64) []int64 {
	var out []int64
	start := int64(0)
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			out = append(out, tlog.StoredHashIndex(level, start>>level))
			start += 1 << level
		}
	}
	return out
}

// append adds a record: its stored hashes (tlog.StoredHashes: the leaf's
// hash, then one per subtree it completes), which the entry keeps.
func (t *tree) append(leaf []byte) ([]tlog.Hash, error) {
	stored, err := tlog.StoredHashes(t.size, leaf, t)
	if err != nil {
		return nil, err
	}
	base := tlog.StoredHashIndex(0, t.size)
	for i, h := range stored {
		t.hashes[base+int64(i)] = h
	}
	t.size++
	keep := map[int64]bool{}
	for _, p := range peaks(t.size) {
		keep[p] = true
	}
	for x := range t.hashes {
		if !keep[x] {
			delete(t.hashes, x)
		}
	}
	return stored, nil
}

// root is the tree's hash (RFC 6962's Merkle tree hash).
func (t *tree) root() (tlog.Hash, error) {
	if t.size == 0 {
		return tlog.Hash{}, errors.New("audit: an empty log has no root")
	}
	return tlog.TreeHash(t.size, t)
}

// storedAt says where stored hash x is kept: in the hashes of entry
// record, at position level (a record's hashes are its leaf's, then one
// per level it completes).
func storedAt(x int64) (record int64, level int) {
	level, n := tlog.SplitStoredHashIndex(x)
	return (n+1)<<level - 1, level
}
