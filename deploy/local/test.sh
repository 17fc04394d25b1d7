#!/usr/bin/env bash
# `make test`: everything against the real local stack.
#   1. format and vet
#   2. start the local stack (deploy/local/stack.sh up); stop it afterwards
#      if this run started it
#   3. unit and integration tests with -race, in the build users run
#      (-tags bcg729), then the Apache-2.0-only build's G.729 tests;
#      integration tests use the real
#      Kafka, ClickHouse, MinIO and Vault and fail (not skip) if one is missing;
#      acceptance tests compare recordings with tshark's export of the RTP,
#      decoded by sox, or ffmpeg for G.722 (all from Debian, installed here
#      when missing)
#   4. the web page's browser test (deploy/browser: chromium and chromedp,
#      signing in through the stack's Dex), its screenshot kept in
#      .stack/artefacts/web.png
#   5. api/openapi.json against OpenAPI 3.1 and JSON Schema 2020-12
#      (deploy/openapi), and schema checks (lint, breaking changes, stale
#      generated code)
#   6. docker-compose.yml validation
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
stack=$here/stack.sh
export VERBATIM_STACK_DIR=${VERBATIM_STACK_DIR:-$repo/.stack}
step() { printf '\n==> %s\n' "$*"; }

apt_install() {
	local s=""
	[ "$(id -u)" -eq 0 ] || s=sudo
	$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 ||
		{ $s apt-get update -qq && $s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

step "test tools (tshark, sox, ffmpeg, sipp, baresip, tcpdump, docker-compose, chromium)"
missing=()
for tool in tshark:tshark sox:sox ffmpeg:ffmpeg sipp:sip-tester baresip:baresip-core tcpdump:tcpdump docker-compose:docker-compose chromium:chromium; do
	command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ -f /usr/include/bcg729/decoder.h ] || missing+=(libbcg729-dev) # G.729, cgo, -tags bcg729
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
tshark --version | head -1; sox --version; ffmpeg -version | head -1

step "a current ClickHouse for the schema check (chdb-core 26.9 from PyPI, in a virtualenv of the cache)"
# Debian's clickhouse-server is 18.16; TestSchemaOnCurrentClickHouse runs
# the migrations and search's queries in chdb-core's engine as well.
chdb_venv="${VERBATIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbatim}/chdb-core-26.9.0"
if ! "$chdb_venv/bin/python" -c 'import chdb' 2>/dev/null; then
	rm -rf "$chdb_venv"
	python3 -m venv "$chdb_venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$chdb_venv"; }
	"$chdb_venv/bin/pip" install -q --disable-pip-version-check 'chdb-core==26.9.0'
fi
export VERBATIM_CHDB_PYTHON="$chdb_venv/bin/python"
"$VERBATIM_CHDB_PYTHON" -c 'import chdb.session as s; print("chdb-core: ClickHouse", s.Session().query("SELECT version()", "CSV").bytes().decode().strip())'

step "gofmt and go vet"
bad=$(gofmt -l $(git ls-files '*.go'))
[ -z "$bad" ] || { echo "gofmt needed: $bad" >&2; exit 1; }
go vet ./...

step "local stack"
started=0
if ! "$stack" status >/dev/null 2>&1; then
	started=1
	trap '"$stack" down' EXIT
fi
"$stack" up
"$stack" status
# Nothing the stack wrote (data, logs, users.xml, credentials) is open to
# other users of the machine.
open=$(find "$VERBATIM_STACK_DIR" -perm /o=rwx -not -type l -print -quit)
[ -z "$open" ] || { echo "the stack left $open open to other users" >&2; exit 1; }
# shellcheck disable=SC1091
. "$VERBATIM_STACK_DIR/env.sh"
export VERBATIM_INTEGRATION=1

step "unit and integration tests (-race, real services), the build users run (-tags bcg729: G.729 through libbcg729)"
go test -race -count=1 -tags bcg729 -v ./... 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)' | tee "$VERBATIM_STACK_DIR/go-test.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "go test failed" >&2; exit "$status"; }

step "the Apache-2.0-only build (no libbcg729): G.729 kept raw and labelled"
go test -race -count=1 -run 'G729|Decoders|Undecodable|LedgerMustBalance' ./processors/... 2>&1 | tail -n 20
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "go test (no bcg729) failed" >&2; exit "$status"; }

step "the web page in a real browser (deploy/browser: Debian's chromium, headless, driven by chromedp)"
(cd deploy/browser && go vet ./... && go test -count=1 -v ./... 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)|http2: server: error reading preface') | tee "$VERBATIM_STACK_DIR/browser-test.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "browser test failed" >&2; exit "$status"; }
echo "screenshot: $VERBATIM_STACK_DIR/artefacts/web.png"

step "the Kubernetes manifests (deploy/kubernetes: every object decoded strictly into k8s.io/api's types, and the deployment rules)"
(cd deploy/kubernetes && go vet ./... && go test -count=1 -v ./... 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)')
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "Kubernetes manifest check failed" >&2; exit "$status"; }

step "the OpenAPI document (deploy/openapi: OpenAPI 3.1 and JSON Schema 2020-12, by libopenapi-validator and jsonschema)"
(cd deploy/openapi && go vet ./... && go test -count=1 -v ./... 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)')
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "OpenAPI document check failed" >&2; exit "$status"; }

step "schema checks"
schemas/check.sh

step "Dockerfile's Go matches go.mod"
want=$(sed -n 's/^go \([0-9]*\.[0-9]*\).*/\1/p' go.mod)
grep -q "^FROM golang:$want-" Dockerfile || { echo "Dockerfile does not build with Go $want, which go.mod asks for" >&2; exit 1; }
echo "Go $want in both"

step "docker-compose.yml"
# The compose file takes credentials from the environment; use the stack's.
VERBATIM_MINIO_USER=$VERBATIM_S3_ACCESS_KEY VERBATIM_MINIO_PASSWORD=$VERBATIM_S3_SECRET_KEY \
	VERBATIM_VAULT_TOKEN=$VERBATIM_VAULT_TOKEN \
	docker-compose -f docker-compose.yml config -q
echo "docker-compose.yml valid"

[ $started -eq 1 ] && step "stopping the stack this run started"
echo "make test: all checks passed"
