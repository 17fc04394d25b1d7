// Command vault is HashiCorp Vault's own CLI and server, built from source for
// the local stack. `go install github.com/hashicorp/vault@...` is refused
// because Vault's go.mod has replace directives, so this module requires Vault
// as a library and calls its command entry point. See deploy/README.md.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
