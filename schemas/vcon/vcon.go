// Package vcon holds the JSON Schema of the vCon documents Verbatim's
// portability export writes (draft-ietf-vcon-vcon-core, syntax 0.4.0),
// and validates documents against it.
package vcon

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed verbatim-vcon.schema.json
var schemaJSON []byte

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("verbatim-vcon.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("verbatim-vcon.schema.json")
})

// Validate checks one vCon document against the schema and says where it
// does not conform.
func Validate(doc []byte) error {
	s, err := compiled()
	if err != nil {
		return fmt.Errorf("vcon: the schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("vcon: not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("vcon: %w", err)
	}
	return nil
}
