package kafkaclient

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/verbatimrec/verbatim/schemas"
)

// A Role is what one of Verbatim's roles may do on Kafka, as ACLs on a
// broker that denies what no ACL allows (allow.everyone.if.no.acl.found
// false). Nobody but the administrator (a super user) may create, delete
// or reconfigure topics, alter ACLs or SCRAM users, or write the topics a
// role does not write.
type Role struct {
	Name string
	// Read are the topics it consumes, Write those it produces to.
	Read, Write []string
	// Groups is the prefix of its consumer groups, Transactions of its
	// transactional ids; empty when it has none.
	Groups, Transactions string
	// Does says what the role is, for operators.
	Does string
}

// Roles are the identities a deployment gives Verbatim's long-running
// roles. The key topic is written by ingest (a call's key), the processor
// (a recording's key) and the API (erasure's tombstones): Kafka's ACLs are
// per topic, so they cannot tell a tombstone from a key, and those three
// identities can each shred a key. Everything else — the one-off
// commands (keys, retention, reprocess, tenant, topics) — runs as the
// administrator.
var Roles = []Role{
	{Name: "ingest", Does: "pcap, live capture and the SIPREC server: write calls, media, metadata and call keys",
		Write: []string{schemas.TopicCalls, schemas.TopicMedia, schemas.TopicMetadata, schemas.TopicKeys}},
	{Name: "process", Does: "the media processor: read media and keys; write recordings, their keys, metadata and audit",
		Read:   []string{schemas.TopicMedia, schemas.TopicKeys, schemas.TopicLifecycle},
		Write:  []string{schemas.TopicRecordings, schemas.TopicKeys, schemas.TopicMetadata, schemas.TopicAudit},
		Groups: "verbatim-process", Transactions: "verbatim-process"},
	{Name: "project", Does: "the search and audit projections: read only",
		Read:   []string{schemas.TopicCalls, schemas.TopicMetadata, schemas.TopicRecordings, schemas.TopicAudit, schemas.TopicKeys, schemas.TopicLifecycle, schemas.TopicPolicy},
		Groups: "verbatim-project"},
	{Name: "api", Does: "the API: read what it serves; write audit, policies, metadata, commands, lifecycle decisions and erasure's tombstones",
		Read:   []string{schemas.TopicCalls, schemas.TopicMetadata, schemas.TopicRecordings, schemas.TopicAudit, schemas.TopicKeys, schemas.TopicLifecycle, schemas.TopicPolicy, schemas.TopicCommands},
		Write:  []string{schemas.TopicAudit, schemas.TopicPolicy, schemas.TopicMetadata, schemas.TopicCommands, schemas.TopicLifecycle, schemas.TopicKeys},
		Groups: "verbatim-api", Transactions: "verbatim-api"},
}

// RoleNamed returns the role of that name.
func RoleNamed(name string) (Role, error) {
	for _, r := range Roles {
		if r.Name == name {
			return r, nil
		}
	}
	return Role{}, fmt.Errorf("kafkaclient: no role %q (have %s)", name, RoleNames())
}

// RoleNames lists the roles' names, comma separated.
func RoleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = r.Name
	}
	return strings.Join(names, ", ")
}

// builders are the role's ACLs for principal, one builder per pattern.
func (r Role) builders(principal string) []*kadm.ACLBuilder {
	var bs []*kadm.ACLBuilder
	if len(r.Read) > 0 {
		bs = append(bs, kadm.NewACLs().Allow(principal).Topics(r.Read...).Operations(kadm.OpRead, kadm.OpDescribe))
	}
	if len(r.Write) > 0 {
		bs = append(bs, kadm.NewACLs().Allow(principal).Topics(r.Write...).Operations(kadm.OpWrite, kadm.OpDescribe))
	}
	if r.Groups != "" {
		bs = append(bs, kadm.NewACLs().Allow(principal).Groups(r.Groups).ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpRead, kadm.OpDescribe))
	}
	if r.Transactions != "" {
		bs = append(bs, kadm.NewACLs().Allow(principal).TransactionalIDs(r.Transactions).ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpWrite, kadm.OpDescribe))
	}
	return bs
}

// Grant gives principal (e.g. "User:verbatim-ingest") role's ACLs, and
// returns how many the broker holds for it. Granting again is harmless:
// Kafka keeps one of each.
func Grant(ctx context.Context, adm *kadm.Client, role Role, principal string) (int, error) {
	if !strings.HasPrefix(principal, "User:") {
		return 0, fmt.Errorf("kafkaclient: principal %q is not User:NAME", principal)
	}
	n := 0
	var errs []error
	for _, b := range role.builders(principal) {
		rs, err := adm.CreateACLs(ctx, b)
		if err != nil {
			return n, fmt.Errorf("kafkaclient: grant %s to %s: %w", role.Name, principal, err)
		}
		for _, r := range rs {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("%s %s %s: %w %s", r.Operation, r.Type, r.Name, r.Err, r.ErrMessage))
				continue
			}
			n++
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("kafkaclient: grant %s to %s: %w", role.Name, principal, errors.Join(errs...))
	}
	return n, nil
}
