// Package openapi holds a test of its own module: api/openapi.json is
// checked against the OpenAPI 3.1 specification's schema by
// github.com/pb33f/libopenapi-validator, a dependency Verbatim itself
// does not need.
package openapi
