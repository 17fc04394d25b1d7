#!/usr/bin/env bash
# Builds the pinned schema tools (buf, protoc-gen-go) from deploy/tools into
# a cache keyed by go.sum, and prints the directory to put on PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VERBATIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbatim}
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
bin=$cache/tools-$key
if [ ! -x "$bin/buf" ] || [ ! -x "$bin/protoc-gen-go" ]; then
	echo "[tools] building buf and protoc-gen-go into $bin (once)" >&2
	mkdir -p "$bin"
	(cd "$here" && go build -trimpath -o "$bin/" github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go)
fi
echo "$bin"
