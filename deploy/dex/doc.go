// Module dex builds Dex (github.com/dexidp/dex), the OpenID Connect
// provider of the local stack and of the tests, from source at a pinned
// commit (v2.45.1), as a Go tool of this module: `go install` of Dex is
// refused for its replace directives. deploy/local/stack.sh builds it once
// into the cache. The bcrypt command hashes the dev users' passwords.
package dex
