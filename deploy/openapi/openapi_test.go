package openapi

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/verbatimrec/verbatim/api"
)

// TestDocumentValidates: api/openapi.json is a valid OpenAPI 3.1
// document (the specification's JSON Schema, by libopenapi-validator),
// and what it says of request bodies is what the server takes: the
// bodies the API's tests send are valid, and ones the server refuses
// (an unknown field, a missing one, a bad pattern) are invalid.
func TestDocumentValidates(t *testing.T) {
	doc, err := libopenapi.NewDocument(api.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if doc.GetVersion() != "3.1.0" {
		t.Fatalf("version %s", doc.GetVersion())
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  at %s: %s", se.FieldPath, se.Reason)
			}
		}
		t.FailNow()
	}
	for _, c := range []struct {
		method, path, body string
		valid              bool
	}{
		{"GET", "/v1/calls?status=complete&limit=10", "", true},
		{"POST", "/v1/calls/c1/tags", `{"tags": ["vip"]}`, true},
		{"POST", "/v1/calls/c1/tags", `{"tags": ["Not A Tag"]}`, false},
		{"POST", "/v1/calls/c1/comments", `{"text": "callback promised"}`, true},
		{"POST", "/v1/calls/c1/comments", `{"text": "x", "author": "mallory"}`, false},
		{"POST", "/v1/calls/c1/evaluations", `{"form": "sales-qa", "criteria": [{"name": "greeting", "score": 4, "max": 5}]}`, true},
		{"POST", "/v1/calls/c1/evaluations", `{"form": "sales-qa"}`, false},
		{"POST", "/v1/metadata", `{"source": "cti", "sip_call_id": "1-1966@10.0.2.20", "skill_group": "sales"}`, true},
		{"POST", "/v1/metadata", `{"source": "cti", "owner": "x"}`, false},
		{"PUT", "/v1/groups/sales", `{"permissions": ["play", "comment"], "skill_groups": ["sales"]}`, true},
		{"PUT", "/v1/groups/sales", `{"permissions": ["listen"]}`, false},
		{"PUT", "/v1/groups/sales/permissions/score", "", true},
		{"PUT", "/v1/groups/sales/permissions/listen", "", false},
		{"POST", "/v1/exports", `{"call_id": "c1"}`, true},
	} {
		req := httptest.NewRequest(c.method, "https://127.0.0.1:18443"+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer x")
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Idempotency-Key", "k1")
		ok, verrs := v.ValidateHttpRequest(req)
		if ok != c.valid {
			var why []string
			for _, e := range verrs {
				why = append(why, e.Message+": "+e.Reason)
			}
			t.Errorf("%s %s %s: valid %v, want %v (%v)", c.method, c.path, c.body, ok, c.valid, why)
		}
	}
}

// TestSchemasAreJSONSchema: every schema of the document (components,
// parameters, bodies, responses) compiles as JSON Schema 2020-12, the
// dialect of OpenAPI 3.1, and is checked against its meta-schema (which
// the OpenAPI document's own schema leaves to the dialect).
func TestSchemasAreJSONSchema(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(api.OpenAPI()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("openapi.json", doc); err != nil {
		t.Fatal(err)
	}
	var pointers []string
	var walk func(v any, ptr string)
	walk = func(v any, ptr string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				p := ptr + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
				if k == "schema" || ptr == "/components/schemas" {
					pointers = append(pointers, p)
					continue
				}
				walk(e, p)
			}
		case []any:
			for i, e := range v {
				walk(e, fmt.Sprintf("%s/%d", ptr, i))
			}
		}
	}
	walk(doc, "")
	if len(pointers) < 40 {
		t.Fatalf("only %d schemas found", len(pointers))
	}
	for _, p := range pointers {
		if _, err := c.Compile("openapi.json#" + p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	t.Logf("%d schemas compiled", len(pointers))
}
