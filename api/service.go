package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"

	"github.com/verbatimrec/verbatim/api/auth"
)

// ServiceAccount is a program that calls the API with a client
// certificate instead of a person's token: a CTI integration posting
// metadata, an exporter. Dex, like other providers, has no client
// credentials grant for it, and a certificate is a credential that is
// rotated and revoked by the customer's own PKI.
type ServiceAccount struct {
	// Name is the certificate's subject common name.
	Name   string      `json:"name"`
	Tenant string      `json:"tenant"`
	Roles  []auth.Role `json:"roles"`
}

// LoadServiceAccounts reads a JSON list of service accounts.
func LoadServiceAccounts(path string) (map[string]ServiceAccount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api: service accounts: %w", err)
	}
	var list []ServiceAccount
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("api: service accounts %s: %w", path, err)
	}
	out := map[string]ServiceAccount{}
	for _, a := range list {
		if a.Name == "" || !auth.ValidTenant(a.Tenant) || len(a.Roles) == 0 {
			return nil, fmt.Errorf("api: service account %q: a name, a tenant and roles are required", a.Name)
		}
		for _, r := range a.Roles {
			if !slices.Contains(auth.Roles, r) {
				return nil, fmt.Errorf("api: service account %q: unknown role %q (have %v)", a.Name, r, auth.Roles)
			}
		}
		if _, dup := out[a.Name]; dup {
			return nil, fmt.Errorf("api: service account %q listed twice", a.Name)
		}
		out[a.Name] = a
	}
	return out, nil
}

// serviceIdentity is the identity of a request's verified client
// certificate, if it names a service account. The TLS layer has checked
// the chain against the service CA (tls.VerifyClientCertIfGiven).
func (s *Server) serviceIdentity(r *http.Request) (auth.Identity, bool, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return auth.Identity{}, false, nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	a, ok := s.cfg.ServiceAccounts[leaf.Subject.CommonName]
	if !ok {
		return auth.Identity{}, true, fmt.Errorf("the client certificate %q is not a service account of this API", leaf.Subject.CommonName)
	}
	return auth.Identity{Subject: "service:" + a.Name, Name: a.Name, Tenant: a.Tenant, Roles: a.Roles, Expiry: leaf.NotAfter}, true, nil
}
