package api_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/verbatimrec/verbatim/api"
)

// TestOpenAPIDocumentsEveryOperation: the document is OpenAPI 3.1 JSON,
// each operation in it has an id, a success and a 401 response, and the
// document the bearer requirement;
// every error response is the Error schema, and its operations are
// exactly those the server serves.
func TestOpenAPIDocumentsEveryOperation(t *testing.T) {
	var doc struct {
		OpenAPI  string                                `json:"openapi"`
		Security []map[string][]string                 `json:"security"`
		Paths    map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Fatalf("openapi %q, security %v", doc.OpenAPI, doc.Security)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				OperationID string                     `json:"operationId"`
				Responses   map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil || op.OperationID == "" || (op.Responses["200"] == nil && op.Responses["201"] == nil && op.Responses["202"] == nil && op.Responses["204"] == nil) || op.Responses["401"] == nil {
				t.Errorf("%s %s: operation id %q, responses %v (%v)", method, path, op.OperationID, len(op.Responses), err)
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	srv, err := api.NewForDocs()
	if err != nil {
		t.Fatal(err)
	}
	served := srv.Routes()
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("documented %v, served %v", documented, served)
	}
}
