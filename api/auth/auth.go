// Package auth verifies the bearer tokens of Verbatim's API: OpenID Connect
// ID tokens from the customer's identity provider (Entra ID, Keycloak, Dex),
// checked against the issuer's published keys (fetched again when a token
// names a key not seen yet: rotation), for issuer, audience, expiry and
// signing algorithm, and turned into an Identity: subject, tenant, roles,
// groups and the parties whose calls are the user's own. Which claim
// carries each is configuration, because every provider puts them
// elsewhere: Entra ID in "roles" and "groups", Keycloak in
// "realm_access.roles", Dex in "groups" (with prefixes, as the local stack
// does: "tenant:demo", "role:supervisor").
//
// There is no anonymous identity: a token that does not verify, or that
// names no tenant or no role Verbatim knows, is refused with the reason.
package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Role is what a signed-in person may do in their tenant.
type Role string

// The roles. A person may have several.
const (
	// RoleUser sees only their own calls: those with a party among
	// Identity.Parties.
	RoleUser Role = "user"
	// RoleSupervisor searches, plays and reports within the tenant, for
	// the groups assigned to them.
	RoleSupervisor Role = "supervisor"
	// RoleAdministrator manages policies, users and groups, and keys.
	RoleAdministrator Role = "administrator"
	// RoleAuditor reads the audit log, nothing else.
	RoleAuditor Role = "auditor"
	// RoleService is a program's (a service account): it posts
	// contact-centre metadata for the tenant's calls, and reads nothing.
	RoleService Role = "service"
)

// Roles are the roles Verbatim knows.
var Roles = []Role{RoleUser, RoleSupervisor, RoleAdministrator, RoleAuditor, RoleService} //nolint:gochecknoglobals // a constant list

// Claim says where a value is in a token: the claim's name, a dotted path
// for nested claims ("realm_access.roles"), and a prefix that marks the
// values meant for Verbatim within it ("tenant:", "role:"), stripped.
type Claim struct {
	Path   string
	Prefix string
}

// Config says which provider to trust and where its tokens carry what.
type Config struct {
	// Issuer is the provider's issuer URL; its discovery document and
	// keys are fetched from it. Required.
	Issuer string
	// Audiences are the client ids a token may be issued to (its "aud").
	// Required: a token for another application is refused.
	Audiences []string
	// CAFile, if set, is the PEM file of the CA that signed the issuer's
	// certificate (the local stack's); otherwise the system's.
	CAFile string
	// Algorithms a token may be signed with. Default RS256 and ES256 (no
	// "none", no HMAC: a token signed with a shared secret is refused).
	Algorithms []string
	// Tenant, Roles, Groups and Parties say where each is. A token must
	// carry exactly one tenant and at least one known role.
	Tenant, Roles, Groups, Parties Claim
	// Now, if set, is the clock (tests).
	Now func() time.Time
}

// DexClaims is how the local stack's Dex (and any provider configured the
// same way) carries them: all in "groups", by prefix.
func DexClaims(c *Config) {
	c.Tenant = Claim{Path: "groups", Prefix: "tenant:"}
	c.Roles = Claim{Path: "groups", Prefix: "role:"}
	c.Groups = Claim{Path: "groups", Prefix: "group:"}
	c.Parties = Claim{Path: "groups", Prefix: "party:"}
}

// Identity is who a verified token says is calling.
type Identity struct {
	Subject string    `json:"subject"`
	Name    string    `json:"name,omitempty"`
	Email   string    `json:"email,omitempty"`
	Tenant  string    `json:"tenant"`
	Roles   []Role    `json:"roles"`
	Groups  []string  `json:"groups,omitempty"`
	Parties []string  `json:"parties,omitempty"`
	Expiry  time.Time `json:"expiry"`
}

// Has reports whether the identity has role r.
func (id Identity) Has(r Role) bool { return slices.Contains(id.Roles, r) }

// tenantRE is what a tenant may be called (as everywhere in Verbatim).
var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidTenant reports whether t may name a tenant.
func ValidTenant(t string) bool { return tenantRE.MatchString(t) }

// ErrToken is the error of every refused token; its message says why.
var ErrToken = errors.New("auth: token refused")

// Verifier checks tokens of one issuer.
type Verifier struct {
	cfg      Config
	v        *oidc.IDTokenVerifier
	provider *oidc.Provider
	client   *http.Client
}

// Endpoint is the issuer's OAuth 2.0 endpoints, from its discovery
// document (for the web page's sign-in).
func (v *Verifier) Endpoint() oauth2.Endpoint { return v.provider.Endpoint() }

// HTTPClient reaches the issuer (trusting its CA, when configured).
func (v *Verifier) HTTPClient() *http.Client { return v.client }

// NewVerifier fetches the issuer's discovery document and prepares to
// verify its tokens. Keys are fetched when first needed and again when a
// token names one not seen (the provider rotated its keys).
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" || len(cfg.Audiences) == 0 {
		return nil, errors.New("auth: an issuer and at least one audience (client id) are required")
	}
	if cfg.Tenant.Path == "" || cfg.Roles.Path == "" {
		return nil, errors.New("auth: say which claims carry the tenant and the roles")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{oidc.RS256, oidc.ES256}
	}
	for _, a := range cfg.Algorithms {
		if strings.HasPrefix(a, "HS") || strings.EqualFold(a, "none") {
			return nil, fmt.Errorf("auth: algorithm %s is not accepted (shared secrets and unsigned tokens are refused)", a)
		}
	}
	client := http.DefaultClient
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("auth: issuer CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("auth: issuer CA %s: no certificate in it", cfg.CAFile)
		}
		client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, client), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer %s: %w", cfg.Issuer, err)
	}
	v := provider.VerifierContext(oidc.ClientContext(context.WithoutCancel(ctx), client), &oidc.Config{
		SkipClientIDCheck:    true, // checked below, against every audience allowed
		SupportedSigningAlgs: cfg.Algorithms,
		Now:                  cfg.Now,
	})
	return &Verifier{cfg: cfg, v: v, provider: provider, client: client}, nil
}

// Verify checks a raw token and returns who it says is calling.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	tok, err := v.v.Verify(ctx, raw)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrToken, err)
	}
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return Identity{}, fmt.Errorf("%w: issued to %q, not to this API (%q)", ErrToken, tok.Audience, v.cfg.Audiences)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("%w: claims: %v", ErrToken, err)
	}
	id := Identity{Subject: tok.Subject, Expiry: tok.Expiry}
	id.Name, _ = claims["name"].(string)
	id.Email, _ = claims["email"].(string)
	tenants := values(claims, v.cfg.Tenant)
	switch {
	case len(tenants) == 0:
		return Identity{}, fmt.Errorf("%w: no tenant in claim %s", ErrToken, describe(v.cfg.Tenant))
	case len(tenants) > 1:
		return Identity{}, fmt.Errorf("%w: several tenants in claim %s (%q): a token is for one tenant", ErrToken, describe(v.cfg.Tenant), tenants)
	}
	if !tenantRE.MatchString(tenants[0]) {
		return Identity{}, fmt.Errorf("%w: tenant %q is not a tenant name (lower-case letters, digits, '.', '_', '-')", ErrToken, tenants[0])
	}
	id.Tenant = tenants[0]
	for _, r := range values(claims, v.cfg.Roles) {
		if role := Role(strings.ToLower(r)); slices.Contains(Roles, role) && !id.Has(role) {
			id.Roles = append(id.Roles, role)
		}
	}
	if len(id.Roles) == 0 {
		return Identity{}, fmt.Errorf("%w: no Verbatim role (%v) in claim %s", ErrToken, Roles, describe(v.cfg.Roles))
	}
	if v.cfg.Groups.Path != "" {
		id.Groups = values(claims, v.cfg.Groups)
	}
	if v.cfg.Parties.Path != "" {
		id.Parties = values(claims, v.cfg.Parties)
	}
	return id, nil
}

func describe(c Claim) string {
	if c.Prefix == "" {
		return fmt.Sprintf("%q", c.Path)
	}
	return fmt.Sprintf("%q (values %q...)", c.Path, c.Prefix)
}

// values are the strings at c's path (a string or a list of them), those
// with c's prefix, without it.
func values(claims map[string]any, c Claim) []string {
	var cur any = claims
	for _, k := range strings.Split(c.Path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	var raw []string
	switch v := cur.(type) {
	case string:
		raw = []string{v}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				raw = append(raw, s)
			}
		}
	}
	var out []string
	for _, s := range raw {
		if after, ok := strings.CutPrefix(s, c.Prefix); ok && after != "" && !slices.Contains(out, after) {
			out = append(out, after)
		}
	}
	return out
}
