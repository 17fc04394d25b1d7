package kafkaclient_test

import (
	"slices"
	"testing"

	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/schemas"
)

// TestRolesGrantLeastPrivilege checks the role table: every topic is
// catalogued, the projections write nothing, ingest reads nothing and
// writes neither the audit log nor recordings. (A Role can only
// express READ, WRITE and DESCRIBE: what only the administrator does
// cannot be granted through it.)
func TestRolesGrantLeastPrivilege(t *testing.T) {
	var known []string
	for _, tp := range schemas.Topics() {
		known = append(known, tp.Name)
	}
	for _, r := range kafkaclient.Roles {
		for _, tp := range append(slices.Clone(r.Read), r.Write...) {
			if !slices.Contains(known, tp) {
				t.Errorf("role %s names topic %s, which schemas does not catalogue", r.Name, tp)
			}
		}
	}
	project, _ := kafkaclient.RoleNamed("project")
	if len(project.Write) != 0 || project.Transactions != "" {
		t.Errorf("the projections may write: %+v", project)
	}
	ingest, _ := kafkaclient.RoleNamed("ingest")
	if len(ingest.Read) != 0 || slices.Contains(ingest.Write, schemas.TopicAudit) || slices.Contains(ingest.Write, schemas.TopicRecordings) {
		t.Errorf("ingest may read, or write the audit log or recordings: %+v", ingest)
	}
	if _, err := kafkaclient.RoleNamed("admin"); err == nil {
		t.Error("a role named admin: the administrator is a super user, not a role")
	}
}
