package api

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Auditor records audit events; Record returns once the event is stored
// (acknowledged by Kafka), so that a request is answered only after.
type Auditor interface {
	Record(ctx context.Context, ev *verbatimv1.AuditEvent) error
}

// KafkaAuditor writes audit events to verbatim.audit.v1, keyed by tenant.
type KafkaAuditor struct{ Client *kgo.Client }

// unauthenticatedTenant keys the audit events of requests whose token did
// not verify: no tenant is known. It is not a valid tenant name, so it
// cannot be mistaken for one.
const unauthenticatedTenant = "_unauthenticated"

// Record produces ev and waits for its acknowledgement.
func (a KafkaAuditor) Record(ctx context.Context, ev *verbatimv1.AuditEvent) error {
	rec, err := auditRecord(ev)
	if err != nil {
		return err
	}
	return a.Client.ProduceSync(ctx, rec).FirstErr()
}

// auditRecord is ev's record on the audit topic.
func auditRecord(ev *verbatimv1.AuditEvent) (*kgo.Record, error) {
	tenant := ev.GetTenant()
	if tenant == "" {
		tenant = unauthenticatedTenant
	}
	return schemas.NewRecord(schemas.TopicAudit, []byte(tenant),
		schemas.Envelope{ID: ev.GetEventId(), Tenant: tenant, OccurredAt: ev.GetOccurredAt().AsTime(), Producer: "verbatim-api"}, ev)
}

// event is the audit event of a request: who (nil: the token did not
// verify), what, on which call or recording, and how it ended (nil:
// success).
func event(r *http.Request, action string, id *auth.Identity, target string, refused *apiError) *verbatimv1.AuditEvent {
	now := time.Now()
	ev := &verbatimv1.AuditEvent{EventId: schemas.RandomID(), OccurredAt: timestamppb.New(now), Action: action,
		Result: verbatimv1.AuditResult_AUDIT_RESULT_SUCCESS, UserAgent: r.UserAgent(), RequestId: r.Header.Get("X-Request-Id")}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ev.SourceAddress = host
	}
	ev.Actor = &verbatimv1.Actor{Subject: "anonymous"}
	if id != nil {
		role := ""
		if len(id.Roles) > 0 {
			role = string(id.Roles[0])
		}
		ev.Tenant = id.Tenant
		ev.Actor = &verbatimv1.Actor{Subject: id.Subject, Role: role, Tenant: id.Tenant}
	}
	if target != "" {
		typ := "call"
		switch {
		case strings.HasPrefix(action, "recording."):
			typ = "recording"
		case strings.HasPrefix(action, "export."):
			typ = "export"
		case strings.HasPrefix(action, "group."):
			typ = "group"
		case strings.HasPrefix(action, "subject."):
			typ = "subject"
		}
		ev.Target = &verbatimv1.Target{Type: typ, Id: target}
	}
	if refused != nil {
		ev.Result = verbatimv1.AuditResult_AUDIT_RESULT_DENIED
		if refused.status >= 500 {
			ev.Result = verbatimv1.AuditResult_AUDIT_RESULT_ERROR
		}
		ev.Reason = refused.code + ": " + refused.message
	}
	return ev
}
