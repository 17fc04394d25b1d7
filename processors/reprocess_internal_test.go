package processors

import (
	"maps"
	"testing"
)

func TestPollSizeBoundsCallsPerTransaction(t *testing.T) {
	triggers := map[int32][]int64{0: {10, 11, 12, 13}, 1: {100}}
	for _, c := range []struct {
		read   map[int32]int64
		perTxn int
		want   int
	}{
		{map[int32]int64{0: 10, 1: 0}, 2, 1},    // two partitions with calls left: one each
		{map[int32]int64{0: 10, 1: 0}, 4, 2},    // two each: p0's third call is 2 records on
		{map[int32]int64{0: 14, 1: 0}, 4, 1000}, // p1's one call: nothing bounds it
		{map[int32]int64{0: 0, 1: 0}, 2, 11},    // p0's second call is 11 records on
		{map[int32]int64{0: 14, 1: 101}, 8, 1000},
	} {
		if got := pollSize(triggers, c.read, c.perTxn); got != c.want {
			t.Errorf("pollSize(read %v, %d per transaction) = %d, want %d", c.read, c.perTxn, got, c.want)
		}
	}
}

func TestJobCheckpoint(t *testing.T) {
	ends := jobEnds{0: 12, 1: 0, 2: 7}
	md := jobCheckpoint("abc123", ends)
	if md != "verbatim-reprocess/v1 sel=abc123 ends=0:12,1:0,2:7" {
		t.Fatalf("checkpoint %q", md)
	}
	got, sel, err := parseJobCheckpoint(md)
	if err != nil || sel != "abc123" || !maps.Equal(got, ends) {
		t.Fatalf("parse: %v %q %v", got, sel, err)
	}
	for _, bad := range []string{"verbatim-reprocess/v1", "verbatim-reprocess/v1 sel=x ends=0:a", "verbatim-reprocess/v1 ends=0:1", "verbatim-reprocess/v1 sel=x ends=01"} {
		if _, _, err := parseJobCheckpoint(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzParseJobCheckpoint: offset-commit metadata is whatever the group's
// last committer wrote; parsing it never panics, and what parses writes
// back the same.
func FuzzParseJobCheckpoint(f *testing.F) {
	f.Add("verbatim-reprocess/v1 sel=abc ends=0:12,1:0")
	f.Add("verbatim-reprocess/v1 sel= ends=")
	f.Add("verbatim-reprocess/v1 ends=99999999999999999999:1 sel=x")
	f.Fuzz(func(t *testing.T, md string) {
		ends, sel, err := parseJobCheckpoint(md)
		if err != nil {
			return
		}
		again, sel2, err := parseJobCheckpoint(jobCheckpoint(sel, ends))
		if err != nil || sel2 != sel || !maps.Equal(again, ends) {
			t.Fatalf("%q: parsed %v %q, written back and parsed %v %q (%v)", md, ends, sel, again, sel2, err)
		}
	})
}
