package schemas_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/schemas"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	in := schemas.Envelope{ID: "0b6f4d8e-1", Type: "verbatim.v1.CallEnded", SchemaVersion: 1, Tenant: "demo", CallID: "c-1",
		OccurredAt: time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC), Producer: "verbatim-ingest/h1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	h := in.AppendHeaders(nil)
	out, err := schemas.ParseHeaders(append(h, kgo.RecordHeader{Key: "x-other", Value: []byte("ignored")}))
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	var ct string
	for _, x := range h {
		if x.Key == schemas.HeaderContentType {
			ct = string(x.Value)
		}
	}
	if ct != schemas.ContentType {
		t.Fatalf("content-type %q", ct)
	}
}

func TestEnvelopeRejects(t *testing.T) {
	for name, h := range map[string][]kgo.RecordHeader{
		"empty":       nil,
		"no tenant":   {{Key: "ce_id", Value: []byte("1")}, {Key: "ce_type", Value: []byte("t")}, {Key: "ce_schemaversion", Value: []byte("1")}, {Key: "ce_time", Value: []byte("2026-11-22T10:00:00Z")}},
		"bad time":    {{Key: "ce_time", Value: []byte("yesterday")}},
		"bad version": {{Key: "ce_schemaversion", Value: []byte("v1")}},
	} {
		_, err := schemas.ParseHeaders(h)
		if !errors.Is(err, schemas.ErrEnvelope) {
			t.Errorf("%s: got %v, want ErrEnvelope", name, err)
		}
	}
	_, err := schemas.ParseHeaders(nil)
	if !strings.Contains(err.Error(), "ce_tenant") {
		t.Errorf("error does not name the missing header: %v", err)
	}
}

func TestTopicCatalogue(t *testing.T) {
	seen := map[string]bool{}
	for _, tp := range schemas.Topics() {
		if seen[tp.Name] || !strings.HasSuffix(tp.Name, ".v1") || tp.Partitions < 1 || tp.Key == "" {
			t.Errorf("bad topic %+v", tp)
		}
		seen[tp.Name] = true
		c := tp.Configs()
		if tp.Name == schemas.TopicKeys && (c["cleanup.policy"] != "compact" || c["segment.ms"] != "3600000" || c["max.compaction.lag.ms"] != "86400000") {
			t.Errorf("keys topic must be compacted, a shredded key gone within 25 hours: %v", c)
		}
		if tp.Name == schemas.TopicMedia && c["retention.ms"] != "604800000" {
			t.Errorf("media retention.ms = %s", c["retention.ms"])
		}
		if tp.Name == schemas.TopicAudit && c["retention.ms"] != "-1" {
			t.Errorf("audit must be kept forever: %v", c)
		}
		if tp.Name == schemas.TopicPolicy && (c["cleanup.policy"] != "compact" || c["segment.ms"] != "3153600000000") {
			t.Errorf("policy topic must be compacted, its segments rolled by size only: %v", c)
		}
		if tp.Name == schemas.TopicLifecycle && (c["cleanup.policy"] != "compact" || c["segment.ms"] != "3153600000000") {
			t.Errorf("lifecycle topic must be compacted, its segments rolled by size only: %v", c)
		}
	}
	if len(seen) != 9 {
		t.Fatalf("%d topics, want 9", len(seen))
	}
}

func FuzzParseHeaders(f *testing.F) {
	e := schemas.Envelope{ID: "1", Type: "verbatim.v1.CallStarted", SchemaVersion: 1, Tenant: "demo", OccurredAt: time.Unix(0, 0)}
	var seed []byte
	for _, h := range e.AppendHeaders(nil) {
		seed = append(seed, h.Key...)
		seed = append(seed, 0)
		seed = append(seed, h.Value...)
		seed = append(seed, 0)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		parts := strings.Split(string(b), "\x00")
		var hs []kgo.RecordHeader
		for i := 0; i+1 < len(parts); i += 2 {
			hs = append(hs, kgo.RecordHeader{Key: parts[i], Value: []byte(parts[i+1])})
		}
		got, err := schemas.ParseHeaders(hs)
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip.
		again, err := schemas.ParseHeaders(got.AppendHeaders(nil))
		if err != nil || again.ID != got.ID || again.Tenant != got.Tenant || !again.OccurredAt.Equal(got.OccurredAt) {
			t.Fatalf("round trip of %+v: %+v, %v", got, again, err)
		}
	})
}

func FuzzPackets(f *testing.F) {
	f.Add(schemas.AppendPacket(schemas.AppendPacket(nil, []byte{0x80, 0, 0, 1}), make([]byte, 172)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var total int
		err := schemas.Packets(b, func(p []byte) error { total += len(p); return nil })
		if err == nil && total > len(b) {
			t.Fatalf("packets longer than their plaintext")
		}
	})
}

func TestIDs(t *testing.T) {
	a, b := schemas.DerivedID("demo", "1-1966@10.0.2.20"), schemas.DerivedID("demo", "1-1966@10.0.2.20")
	if a != b || a == schemas.DerivedID("acme", "1-1966@10.0.2.20") || a == schemas.DerivedID("demo1", "-1966@10.0.2.20") {
		t.Fatalf("DerivedID not a function of its parts: %s %s", a, b)
	}
	r := schemas.RandomID()
	if r == schemas.RandomID() || len(r) != 36 || r[14] != '4' || len(a) != 36 || a[14] != '5' {
		t.Fatalf("ids %s %s", r, a)
	}
}
