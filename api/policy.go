package api

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/verbatimrec/verbatim/api/auth"
	"github.com/verbatimrec/verbatim/internal/kafkaclient"
	"github.com/verbatimrec/verbatim/projections/search"
	"github.com/verbatimrec/verbatim/schemas"
	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Permission is one thing a user group may be granted or have revoked.
type Permission string

// The permissions, as the API spells them.
const (
	PermPlay     Permission = "play"     // listen in the browser (streamed)
	PermDownload Permission = "download" // save a recording's file
	PermExport   Permission = "export"   // bulk export
	PermComment  Permission = "comment"  // comments and tags
	PermScore    Permission = "score"    // evaluations and scores
)

// Permissions are every permission, in the order the API lists them.
var Permissions = []Permission{PermPlay, PermDownload, PermExport, PermComment, PermScore} //nolint:gochecknoglobals // a constant list

var permissionEnum = map[Permission]verbatimv1.Permission{ //nolint:gochecknoglobals // a constant table
	PermPlay: verbatimv1.Permission_PERMISSION_PLAY, PermDownload: verbatimv1.Permission_PERMISSION_DOWNLOAD,
	PermExport: verbatimv1.Permission_PERMISSION_EXPORT, PermComment: verbatimv1.Permission_PERMISSION_COMMENT,
	PermScore: verbatimv1.Permission_PERMISSION_SCORE,
}

// roleDefaults are the permissions of a role when none of a person's
// groups has a policy.
var roleDefaults = map[auth.Role][]Permission{ //nolint:gochecknoglobals // a constant table
	auth.RoleUser:          {PermPlay, PermDownload, PermComment},
	auth.RoleSupervisor:    Permissions,
	auth.RoleAdministrator: Permissions,
}

// Policies is the group policies of every tenant, followed from
// verbatim.policy.v1. Safe for concurrent use.
type Policies struct {
	f  *kafkaclient.Follower
	mu struct {
		sync.Mutex
		byKey map[string]*verbatimv1.GroupPolicy // "tenant/group"
	}
}

// PolicyConsumeOpts are the options of the client StartPolicies takes.
func PolicyConsumeOpts() []kgo.Opt { return kafkaclient.FollowOpts(schemas.TopicPolicy) }

// StartPolicies follows the policy topic with cl, a client made with
// PolicyConsumeOpts and no consumer group; the view owns cl.
func StartPolicies(cl *kgo.Client) *Policies {
	p := &Policies{}
	p.mu.byKey = map[string]*verbatimv1.GroupPolicy{}
	p.f = kafkaclient.Follow(cl, p.apply, schemas.TopicPolicy)
	return p
}

func policyKey(tenant, group string) string { return tenant + "/" + group }

func (p *Policies) apply(rec *kgo.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if rec.Value == nil {
		delete(p.mu.byKey, string(rec.Key))
		return nil
	}
	gp := &verbatimv1.GroupPolicy{}
	if err := proto.Unmarshal(rec.Value, gp); err != nil {
		return fmt.Errorf("api: not a GroupPolicy: %w", err)
	}
	if policyKey(gp.GetTenant(), gp.GetGroup()) != string(rec.Key) {
		return fmt.Errorf("api: a GroupPolicy of %s/%s under key %q: ignored", gp.GetTenant(), gp.GetGroup(), rec.Key)
	}
	p.mu.byKey[string(rec.Key)] = gp
	return nil
}

// Sync brings the view up to the topic's end offsets of now: every
// policy set before it returns is in force.
func (p *Policies) Sync(ctx context.Context) error { return p.f.Sync(ctx) }

// Close stops following.
func (p *Policies) Close() { p.f.Close() }

// Tenant returns tenant's policies, by group.
func (p *Policies) Tenant(tenant string) []*verbatimv1.GroupPolicy {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*verbatimv1.GroupPolicy
	for k, gp := range p.mu.byKey {
		if strings.HasPrefix(k, tenant+"/") {
			out = append(out, gp)
		}
	}
	slices.SortFunc(out, func(a, b *verbatimv1.GroupPolicy) int { return strings.Compare(a.GetGroup(), b.GetGroup()) })
	return out
}

func (p *Policies) get(tenant, group string) *verbatimv1.GroupPolicy {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.byKey[policyKey(tenant, group)]
}

// grants is what one identity may do: its permissions, and the calls it
// may find.
type grants struct {
	perms map[Permission]bool
	// Parties, if set, are the user's: only calls with one of them.
	parties []string
	// skillGroups, if set, are a supervisor's: only calls of these.
	skillGroups []string
	// from names the groups whose policies gave them; none: the roles'
	// defaults.
	from []string
}

func (g grants) may(p Permission) bool { return g.perms[p] }

// forbid is the refusal of an action that needs p.
func (g grants) forbid(p Permission) error {
	why := "your roles do not grant it"
	if len(g.from) > 0 {
		why = fmt.Sprintf("the policies of your groups %q do not grant it", g.from)
	}
	return &apiError{http.StatusForbidden, "permission_denied", fmt.Sprintf("this needs the %q permission: %s", p, why)}
}

// scope narrows q to the calls g may find.
func (g grants) scope(q *search.Query) {
	q.Parties, q.SkillGroups = g.parties, g.skillGroups
}

// none matches no party and no skill group: an identity that may find no
// call.
const none = "\x00none"

// grants works out what id may do: from the policies of its groups (the
// view brought up to date first, so a revocation holds at once), else
// its roles' defaults. An administrator is never narrowed by policies (it
// sets them). A user finds only their own calls; a supervisor governed by
// policies only the calls of the skill groups they assign.
func (s *Server) grants(ctx context.Context, id auth.Identity) (grants, error) {
	g := grants{perms: map[Permission]bool{}}
	admin, supervisor := id.Has(auth.RoleAdministrator), id.Has(auth.RoleSupervisor)
	if !admin && !supervisor && !id.Has(auth.RoleService) {
		g.parties = id.Parties
		if len(g.parties) == 0 {
			g.parties = []string{none} // a user with no party owns no call
		}
	}
	var ps []*verbatimv1.GroupPolicy
	if !admin && len(id.Groups) > 0 {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := s.cfg.Policies.Sync(sctx); err != nil {
			s.cfg.Logger.Error("group policies not read", "err", err)
			return g, &apiError{http.StatusServiceUnavailable, "policies_unavailable", "the group policies cannot be read, so nothing is allowed: try again"}
		}
		for _, grp := range id.Groups {
			if gp := s.cfg.Policies.get(id.Tenant, grp); gp != nil {
				ps = append(ps, gp)
			}
		}
	}
	if len(ps) == 0 {
		for _, r := range id.Roles {
			for _, p := range roleDefaults[r] {
				g.perms[p] = true
			}
		}
		return g, nil
	}
	all := false
	for _, gp := range ps {
		g.from = append(g.from, gp.GetGroup())
		for _, name := range Permissions {
			if slices.Contains(gp.GetPermissions(), permissionEnum[name]) {
				g.perms[name] = true
			}
		}
		all = all || gp.GetAllCalls()
		for _, sg := range gp.GetSkillGroups() {
			if !slices.Contains(g.skillGroups, sg) {
				g.skillGroups = append(g.skillGroups, sg)
			}
		}
	}
	switch {
	case !supervisor, all:
		g.skillGroups = nil
	case len(g.skillGroups) == 0:
		g.skillGroups = []string{none}
	}
	return g, nil
}

// groupRE is what a group may be called: as identity providers name
// them (Entra ID object ids, Keycloak paths such as "/sales/emea").
var groupRE = regexp.MustCompile(`^[A-Za-z0-9/][A-Za-z0-9._:@/ -]{0,127}$`)

// policyOut is a group policy as the API shows it.
type policyOut struct {
	Group       string       `json:"group"`
	Permissions []Permission `json:"permissions"`
	SkillGroups []string     `json:"skill_groups"`
	AllCalls    bool         `json:"all_calls"`
	UpdatedAt   time.Time    `json:"updated_at"`
	UpdatedBy   string       `json:"updated_by"`
}

func showPolicy(gp *verbatimv1.GroupPolicy) policyOut {
	out := policyOut{Group: gp.GetGroup(), Permissions: []Permission{}, SkillGroups: append([]string{}, gp.GetSkillGroups()...),
		AllCalls: gp.GetAllCalls(), UpdatedAt: gp.GetUpdatedAt().AsTime(), UpdatedBy: gp.GetUpdatedBy()}
	for _, p := range Permissions {
		if slices.Contains(gp.GetPermissions(), permissionEnum[p]) {
			out.Permissions = append(out.Permissions, p)
		}
	}
	return out
}

// policyIn is a group policy as an administrator sets it.
type policyIn struct {
	Permissions []Permission `json:"permissions"`
	SkillGroups []string     `json:"skill_groups"`
	AllCalls    bool         `json:"all_calls"`
}

// group is the group a request names, checked.
func group(req *request) (string, error) {
	g := req.r.PathValue("id")
	if !groupRE.MatchString(g) {
		return "", badRequest("group %q: 1 to 128 letters, digits, '.', '_', ':', '@', '/', '-' or spaces, as the identity provider names it", g)
	}
	return g, nil
}

func (s *Server) listGroups(w http.ResponseWriter, req *request) error {
	if _, err := query(req.r); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(req.r.Context(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Policies.Sync(sctx); err != nil {
		return &apiError{http.StatusServiceUnavailable, "policies_unavailable", "the group policies cannot be read: try again"}
	}
	out := []policyOut{}
	for _, gp := range s.cfg.Policies.Tenant(req.id.Tenant) {
		out = append(out, showPolicy(gp))
	}
	return writeJSON(w, map[string]any{"groups": out, "permissions": Permissions})
}

// setGroup replaces a group's policy.
func (s *Server) setGroup(w http.ResponseWriter, req *request) error {
	g, err := group(req)
	if err != nil {
		return err
	}
	if _, err := query(req.r); err != nil {
		return err
	}
	var in policyIn
	if err := decodeStrict(req.r.Body, &in); err != nil {
		return err
	}
	if len(in.SkillGroups) > 100 {
		return badRequest("skill_groups: at most 100")
	}
	for _, sg := range in.SkillGroups {
		if sg == "" || len(sg) > 256 {
			return badRequest("skill_groups: 1 to 256 bytes each")
		}
	}
	if in.AllCalls && len(in.SkillGroups) > 0 {
		return badRequest("all_calls and skill_groups: one or the other")
	}
	return s.changePolicy(w, req, g, func(*verbatimv1.GroupPolicy) (*verbatimv1.GroupPolicy, error) {
		gp := &verbatimv1.GroupPolicy{SkillGroups: in.SkillGroups, AllCalls: in.AllCalls}
		for _, p := range in.Permissions {
			e, ok := permissionEnum[p]
			if !ok {
				return nil, badRequest("permission %q: one of %q", p, Permissions)
			}
			if !slices.Contains(gp.Permissions, e) {
				gp.Permissions = append(gp.Permissions, e)
			}
		}
		return gp, nil
	})
}

// removeGroup removes a group's policy: its members fall back to their
// roles' defaults (or their other groups' policies).
func (s *Server) removeGroup(w http.ResponseWriter, req *request) error {
	g, err := group(req)
	if err != nil {
		return err
	}
	if _, err := query(req.r); err != nil {
		return err
	}
	return s.changePolicy(w, req, g, func(old *verbatimv1.GroupPolicy) (*verbatimv1.GroupPolicy, error) {
		if old == nil {
			return nil, notFound("a policy of group " + g)
		}
		return nil, nil
	})
}

// changePermission grants (PUT, grant) or revokes (DELETE) one
// permission of a group's policy; a group without one gets a policy of
// that permission alone (and no calls, until skill groups are set).
func (s *Server) changePermission(grant bool) handler {
	return func(w http.ResponseWriter, req *request) error {
		g, err := group(req)
		if err != nil {
			return err
		}
		if _, err := query(req.r); err != nil {
			return err
		}
		p := Permission(req.r.PathValue("permission"))
		e, ok := permissionEnum[p]
		if !ok {
			return badRequest("permission %q: one of %q", p, Permissions)
		}
		return s.changePolicy(w, req, g, func(old *verbatimv1.GroupPolicy) (*verbatimv1.GroupPolicy, error) {
			gp := &verbatimv1.GroupPolicy{}
			if old != nil {
				gp = proto.CloneOf(old)
			} else if !grant {
				return nil, notFound("a policy of group " + g)
			}
			gp.Permissions = slices.DeleteFunc(gp.Permissions, func(x verbatimv1.Permission) bool { return x == e })
			if grant {
				gp.Permissions = append(gp.Permissions, e)
			}
			return gp, nil
		})
	}
}

// changePolicy applies change to group's current policy (nil: none) and
// commits the result (nil: removed) with the request's audit event, then
// waits until the view holds it: the answer is the policy in force.
// Changes on one server are made one at a time.
func (s *Server) changePolicy(w http.ResponseWriter, req *request, group string, change func(old *verbatimv1.GroupPolicy) (*verbatimv1.GroupPolicy, error)) error {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	ctx, cancel := context.WithTimeout(req.r.Context(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Policies.Sync(ctx); err != nil {
		return &apiError{http.StatusServiceUnavailable, "policies_unavailable", "the group policies cannot be read, so none is changed: try again"}
	}
	gp, err := change(s.cfg.Policies.get(req.id.Tenant, group))
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: schemas.TopicPolicy, Key: []byte(policyKey(req.id.Tenant, group))}
	if gp != nil {
		gp.Tenant, gp.Group, gp.UpdatedAt, gp.UpdatedBy = req.id.Tenant, group, timestamppb.Now(), req.id.Subject
		if rec, err = schemas.NewRecord(schemas.TopicPolicy, rec.Key, schemas.Envelope{ID: schemas.RandomID(), Tenant: req.id.Tenant,
			OccurredAt: gp.GetUpdatedAt().AsTime(), Producer: "verbatim-api"}, gp); err != nil {
			return err
		}
	}
	arec, err := auditRecord(event(req.r, req.action, &req.id, group, nil))
	if err != nil {
		return err
	}
	if err := s.cfg.Writer.Commit(ctx, rec, arec); err != nil {
		return &apiError{http.StatusServiceUnavailable, "unavailable", "the policy and its audit event could not be committed; nothing was changed: try again"}
	}
	req.audited = true // in the transaction above
	if err := s.cfg.Policies.Sync(ctx); err != nil {
		return &apiError{http.StatusServiceUnavailable, "policies_unavailable", "the policy is committed but this server has not read it back yet: list the groups again"}
	}
	if gp == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return writeJSON(w, showPolicy(gp))
}
