package schemas

import (
	"maps"
	"strconv"
	"time"
)

// Cleanup policies, as Kafka's cleanup.policy spells them.
const (
	CleanupDelete  = "delete"
	CleanupCompact = "compact"
)

// Topic describes one v1 topic: what it carries and how it must be created.
type Topic struct {
	// Name is the Kafka topic name.
	Name string
	// Key names the record key: "call_id", "key_id" or "tenant".
	Key string
	// Message is the protobuf message name of record values.
	Message string
	// Partitions is the default partition count for a new topic.
	Partitions int32
	// Cleanup is CleanupDelete or CleanupCompact.
	Cleanup string
	// Retention is retention.ms; zero means forever (-1).
	Retention time.Duration
	// Producers and Consumers name the Verbatim roles that write and read it.
	Producers, Consumers []string
	// Config holds further topic-level configs.
	Config map[string]string
}

// Configs returns the topic-level configs to create the topic with.
func (t Topic) Configs() map[string]string {
	ret := "-1"
	if t.Retention > 0 {
		ret = strconv.FormatInt(t.Retention.Milliseconds(), 10)
	}
	cfg := map[string]string{
		"cleanup.policy": t.Cleanup,
		"retention.ms":   ret,
		// Let one record carry a full media batch with room to spare.
		"max.message.bytes": "4194304",
	}
	maps.Copy(cfg, t.Config)
	return cfg
}

// Topic names of schema version 1.
const (
	TopicCalls      = "verbatim.calls.v1"
	TopicMedia      = "verbatim.media.v1"
	TopicMetadata   = "verbatim.metadata.v1"
	TopicRecordings = "verbatim.recordings.v1"
	TopicKeys       = "verbatim.keys.v1"
	TopicAudit      = "verbatim.audit.v1"
	TopicCommands   = "verbatim.commands.v1"
	TopicPolicy     = "verbatim.policy.v1"
	TopicLifecycle  = "verbatim.lifecycle.v1"
)

// KeysCompactionLag bounds how long a shredded data key's wrapped bytes
// stay in the keys topic after its tombstone: a segment rolls after
// KeysSegmentAge, and the cleaner must compact a segment within
// KeysCompactionLag of its records being written. An erasure report
// states the sum as the time within which the key is gone from the log.
const (
	KeysSegmentAge    = time.Hour
	KeysCompactionLag = 24 * time.Hour
)

// MediaRetention is how long sealed media batches stay on the media topic:
// long enough to reprocess after an outage, short enough to bound the log.
// The processor keeps the raw packets of every call in object storage.
const MediaRetention = 7 * 24 * time.Hour

// Topics returns the v1 topic catalogue, in pipeline order. README.md
// documents the same table for readers outside Go.
func Topics() []Topic {
	return []Topic{
		{Name: TopicCalls, Key: "call_id", Message: "verbatim.v1.CallStarted | CallUpdated | CallEnded", Partitions: 12, Cleanup: CleanupDelete,
			Producers: []string{"ingest"}, Consumers: []string{"process", "project search"}},
		{Name: TopicMedia, Key: "call_id", Message: "verbatim.v1.PacketBatch | MediaEnded", Partitions: 12, Cleanup: CleanupDelete, Retention: MediaRetention,
			Producers: []string{"ingest"}, Consumers: []string{"process"}},
		{Name: TopicMetadata, Key: "call_id", Message: "verbatim.v1.MetadataAttached", Partitions: 12, Cleanup: CleanupDelete,
			Producers: []string{"ingest", "cti api"}, Consumers: []string{"project search"}},
		{Name: TopicRecordings, Key: "call_id", Message: "verbatim.v1.RecordingStored | RecordingFailed | RecordingDeleted | CallErased | RetentionExtended", Partitions: 12, Cleanup: CleanupDelete,
			Producers: []string{"process"}, Consumers: []string{"project search", "api"}},
		{Name: TopicKeys, Key: "key_id", Message: "verbatim.v1.DataKey (null value: shredded)", Partitions: 6, Cleanup: CleanupCompact,
			Producers: []string{"ingest", "process", "erasure"}, Consumers: []string{"process", "project search", "api"},
			// A shredded key's record is compacted away within a bounded
			// time. The last record of a partition is in its active
			// segment, which the cleaner never touches, so a reader
			// waiting for the end offset still reaches it.
			Config: map[string]string{"segment.ms": strconv.FormatInt(KeysSegmentAge.Milliseconds(), 10),
				"max.compaction.lag.ms": strconv.FormatInt(KeysCompactionLag.Milliseconds(), 10)}},
		{Name: TopicAudit, Key: "tenant", Message: "verbatim.v1.AuditEvent", Partitions: 6, Cleanup: CleanupDelete,
			Producers: []string{"api", "process", "reprocess", "ingest", "siprec", "play"}, Consumers: []string{"project audit"}},
		{Name: TopicCommands, Key: "tenant", Message: "verbatim.v1.Command", Partitions: 6, Cleanup: CleanupDelete,
			Producers: []string{"api"}, Consumers: []string{"process"}},
		// Written rarely, read whole by every API server at start and to
		// its end before each decision. Its segments roll only by size
		// (about 5 million policies), so the last records of a partition,
		// transaction markers and tombstones, are never cleaned away from
		// under a reader that waits to reach the end offset.
		{Name: TopicPolicy, Key: "tenant/group", Message: "verbatim.v1.GroupPolicy (null value: removed)", Partitions: 3, Cleanup: CleanupCompact,
			Producers: []string{"api"}, Consumers: []string{"api"},
			Config: map[string]string{"segment.ms": strconv.FormatInt(100*365*24*time.Hour.Milliseconds(), 10)}},
		// Legal holds, early deletions awaiting approval and erasure
		// requests: read whole before each deletion decision, never
		// removed. Segments roll by size only, as the policy topic's.
		{Name: TopicLifecycle, Key: "hold/TENANT/ID | deletion/TENANT/ID | erasure/TENANT/ID", Message: "verbatim.v1.LifecycleRecord", Partitions: 3, Cleanup: CleanupCompact,
			Producers: []string{"api", "erasure", "lifecycle"}, Consumers: []string{"api", "erasure", "lifecycle"},
			Config: map[string]string{"segment.ms": strconv.FormatInt(100*365*24*time.Hour.Milliseconds(), 10)}},
	}
}
