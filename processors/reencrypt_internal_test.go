package processors

import (
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// TestSelectResealed: keys and calls name recordings; a superseded
// recording, a call key, an unknown key, a call with no recording, a
// shredded key and a call done before are each skipped with the reason;
// a recording named twice is taken once.
func TestSelectResealed(t *testing.T) {
	stored := func(call, id, key, supersedes, reason string) *verbatimv1.RecordingStored {
		ev := &verbatimv1.RecordingStored{CallId: call, RecordingId: id, Key: &verbatimv1.KeyReference{KeyId: key}}
		if supersedes != "" {
			ev.Supersedes = &verbatimv1.Supersession{RecordingId: supersedes, Reason: reason, Generation: 1}
		}
		return ev
	}
	rs := &recordings{byID: map[string]*verbatimv1.RecordingStored{}, supersededBy: map[string]*verbatimv1.RecordingStored{}}
	for _, ev := range []*verbatimv1.RecordingStored{
		stored("a", "ra", "dk-ra", "", ""),
		stored("b", "rb0", "dk-rb0", "", ""), stored("b", "rb1", "dk-rb1", "rb0", "reprocessed: g729"),
		stored("c", "rc0", "dk-rc0", "", ""), stored("c", "rc1", "dk-rc1", "rc0", "re-encrypted: incident 7"),
	} {
		rs.byID[ev.GetRecordingId()] = ev
		rs.order = append(rs.order, ev.GetRecordingId())
		if s := ev.GetSupersedes().GetRecordingId(); s != "" {
			rs.supersededBy[s] = ev
		}
	}
	live := map[string]*verbatimv1.DataKey{}
	for _, k := range []string{"dk-ra", "dk-rb0", "dk-rb1", "dk-rc1"} {
		live[k] = &verbatimv1.DataKey{KeyId: k, Purpose: "recording"}
	}
	live["ck-a"] = &verbatimv1.DataKey{KeyId: "ck-a", Purpose: "call", CallId: "a"}
	got := selectResealed(rs, live, []string{"dk-ra", "dk-rb0", "ck-a", "nope", "dk-rc0"}, []string{"a", "b", "c", "z"}, "incident 7")
	want := []struct{ rec, skip string }{
		{"ra", ""},
		{"rb0", "superseded by recording rb1"},
		{"", "call a's own key"},
		{"", "seals no recording"},
		{"rc0", "already re-encrypted as rc1"},
		{"rb1", ""},
		{"rc1", "for this reason"},
		{"", "no stored recording"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d selected, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.RecordingID != w.rec || (w.skip == "") != (g.Skip == "") || !strings.Contains(g.Skip, w.skip) {
			t.Errorf("%d: %+v, want recording %q skip %q", i, g, w.rec, w.skip)
		}
	}
	if got[0].OldKeyID != "dk-ra" || got[5].OldKeyID != "dk-rb1" {
		t.Errorf("old keys: %s, %s", got[0].OldKeyID, got[5].OldKeyID)
	}
}
