//go:build tools

// Package tools pins the code generators and schema checkers that `make
// schemas` and `make test` run, so they stay out of the main module's
// dependencies. Build them with `go build -o bin/ <path>` from this folder.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)
