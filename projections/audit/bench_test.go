package audit

import (
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

// BenchmarkTreeAppend: events appended per second to a tenant's tree
// (the hashing; the projection's insert into ClickHouse is measured by
// BenchmarkAppender).
func BenchmarkTreeAppend(b *testing.B) {
	leaf := make([]byte, 400) // a typical AuditEvent
	t := newTree()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.append(leaf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// memHashes is every stored hash of a log, in memory.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m[x]
	}
	return out, nil
}

// BenchmarkProve: the cost of an inclusion proof in a log of a million
// entries (making it with tlog, and checking it with
// transparency-dev/merkle), and the hashes it reads.
func BenchmarkProve(b *testing.B) {
	const n = 1 << 20
	var all memHashes
	for i := int64(0); i < n; i++ {
		hs, err := tlog.StoredHashes(i, []byte(fmt.Sprint(i)), all)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, hs...)
	}
	root, err := tlog.TreeHash(n, all)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("make", func(b *testing.B) {
		i := int64(0)
		for b.Loop() {
			if _, err := tlog.ProveRecord(n, i%n, all); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
	b.Run("check", func(b *testing.B) {
		p, err := tlog.ProveRecord(n, 123456, all)
		if err != nil {
			b.Fatal(err)
		}
		path := make([][]byte, len(p))
		for i := range p {
			path[i] = p[i][:]
		}
		leaf := rfc6962.DefaultHasher.HashLeaf([]byte("123456"))
		b.ReportMetric(float64(len(p)), "hashes/proof")
		for b.Loop() {
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 123456, n, leaf, path, root[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
