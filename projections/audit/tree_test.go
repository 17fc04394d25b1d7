package audit

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
)

// mth is RFC 6962's Merkle tree hash of leaves, computed naively with
// transparency-dev/merkle's hasher (not our code).
func mth(leaves [][]byte) []byte {
	h := rfc6962.DefaultHasher
	switch len(leaves) {
	case 0:
		return h.EmptyRoot()
	case 1:
		return h.HashLeaf(leaves[0])
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return h.HashChildren(mth(leaves[:k]), mth(leaves[k:]))
}

// TestTreeIsRFC6962: for every size to 130, the root of our tree (tlog,
// keeping only its peaks) is RFC 6962's hash of the same leaves, and it
// keeps no more hashes than the size has peaks.
func TestTreeIsRFC6962(t *testing.T) {
	tr := newTree()
	var leaves [][]byte
	for n := 1; n <= 130; n++ {
		leaf := []byte(fmt.Sprintf("event %d", n))
		leaves = append(leaves, leaf)
		if _, err := tr.append(leaf); err != nil {
			t.Fatal(err)
		}
		root, err := tr.root()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(root[:], mth(leaves)) {
			t.Fatalf("size %d: root differs from RFC 6962's", n)
		}
		if len(tr.hashes) != len(peaks(int64(n))) {
			t.Fatalf("size %d: %d hashes kept, %d peaks", n, len(tr.hashes), len(peaks(int64(n))))
		}
	}
}
