package schemas

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// AuditRecord is ev as a record of the audit topic, keyed by its tenant,
// with producer (e.g. "verbatim-lifecycle") in its envelope.
func AuditRecord(ev *verbatimv1.AuditEvent, producer string) (*kgo.Record, error) {
	return NewRecord(TopicAudit, []byte(ev.GetTenant()),
		Envelope{ID: ev.GetEventId(), Tenant: ev.GetTenant(), CallID: ev.GetCallId(), OccurredAt: ev.GetOccurredAt().AsTime(), Producer: producer}, ev)
}
