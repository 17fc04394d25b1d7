#!/usr/bin/env bash
# Schema checks, run by `make test`:
#   1. buf lint (STANDARD rules)
#   2. buf breaking against baseline/v1.binpb, the last released image
#      (WIRE_JSON rules: no change that breaks binary or JSON consumers)
#   3. the committed Go code equals a fresh generation (no stale code)
# `make schemas` regenerates; `make schemas-baseline` accepts the current
# protos as the new baseline (only for compatible, released changes).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATH=$("$here/../deploy/tools/tools.sh"):$PATH
cd "$here"

buf lint
echo "schemas: buf lint ok"
buf breaking --against baseline/v1.binpb
echo "schemas: buf breaking against baseline/v1.binpb ok"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r buf.yaml buf.gen.yaml proto "$tmp/"
(cd "$tmp" && buf generate)
if ! diff -r "$tmp/verbatimv1" verbatimv1; then
	echo "schemas: generated code in schemas/verbatimv1 is stale; run 'make schemas' and commit" >&2
	exit 1
fi
echo "schemas: generated code up to date"
