package schemas_test

import (
	"os"
	"regexp"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/verbatimrec/verbatim/schemas/verbatimv1" // registers the v1 messages
)

// TestREADMEExamples decodes every example in README.md strictly against
// the schema, and checks that every event type has one, so the topic
// documentation cannot drift from the contracts.
func TestREADMEExamples(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- example (verbatim\\.v1\\.[A-Za-z]+) -->\\n```json\\n(.*?)```")
	found := map[string]bool{}
	for _, m := range re.FindAllSubmatch(b, -1) {
		name := string(m[1])
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
		if err != nil {
			t.Errorf("example of unknown message %s", name)
			continue
		}
		msg := mt.New().Interface()
		if err := protojson.Unmarshal(m[2], msg); err != nil {
			t.Errorf("example %s does not decode: %v", name, err)
		}
		found[name] = true
	}
	for _, name := range []string{
		"CallStarted", "CallUpdated", "CallEnded", "PacketBatch", "MetadataAttached",
		"RecordingStored", "RecordingDeleted", "DataKey", "AuditEvent", "Command", "GroupPolicy",
	} {
		if !found["verbatim.v1."+name] {
			t.Errorf("README.md has no example of verbatim.v1.%s", name)
		}
	}
}
