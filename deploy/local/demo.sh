#!/usr/bin/env bash
# `make demo`: the embedded default end to end on the sample captures.
#   1. build verbatim
#   2. start ClickHouse (deploy/local/stack.sh up clickhouse) for search
#   3. run `verbatim dev` (embedded Kafka, filesystem store, local keyring)
#   4. ingest every sample capture in ../shared/testdata/pcap
#   5. assemble, encrypt and store the recordings (verbatim process)
#   6. project the topics into ClickHouse and print the calls found
#   7. decrypt one recording to a WAV file (verbatim play), hashes checked
# Everything it started is stopped at the end; the data stays in .verbatim/demo.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export VERBATIM_STACK_DIR=${VERBATIM_STACK_DIR:-$repo/.stack}
samples=${VERBATIM_SAMPLES:-$repo/../shared/testdata/pcap}
data=$repo/.verbatim/demo
port=${VERBATIM_DEMO_KAFKA_PORT:-19192}
step() { printf '\n==> %s\n' "$*"; }

step "build"
"$here/build.sh"

step "ClickHouse for search"
started_ch=0
if ! "$here/stack.sh" status clickhouse >/dev/null 2>&1; then started_ch=1; fi
"$here/stack.sh" up clickhouse
# shellcheck disable=SC1091
. "$VERBATIM_STACK_DIR/env.sh"

step "embedded default (verbatim dev) on 127.0.0.1:$port"
rm -rf "$data"
mkdir -p "$data"
# The roles run below, one step at a time, so that each can be seen.
bin/verbatim dev --data "$data" --kafka-port "$port" --clickhouse "$VERBATIM_CLICKHOUSE_ADDR" --roles= >"$data/dev.log" 2>&1 &
dev=$!
cleanup() {
	kill "$dev" 2>/dev/null && wait "$dev" 2>/dev/null || true
	[ $started_ch -eq 0 ] || "$here/stack.sh" down clickhouse
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	grep -q '^running' "$data/dev.log" 2>/dev/null && break
	kill -0 "$dev" 2>/dev/null || { cat "$data/dev.log"; exit 1; }
	sleep 0.1
done
cat "$data/dev.log"

brokers=127.0.0.1:$port
keys=(--keyring "$data/keyring.json")
objects=(--objects "$data/objects")
step "ingest the sample captures"
shopt -s nullglob
captures=("$samples"/*.pcap "$samples"/*.cap)
[ ${#captures[@]} -gt 0 ] || { echo "no captures in $samples" >&2; exit 1; }
bin/verbatim ingest pcap --brokers "$brokers" "${keys[@]}" "${captures[@]}"

step "assemble, encrypt and store the recordings"
bin/verbatim process --brokers "$brokers" "${keys[@]}" "${objects[@]}" --spool "$data" --exit-when-idle --quiet

step "project into ClickHouse"
bin/verbatim project search --brokers "$brokers" "${keys[@]}" --database verbatim_demo --exit-when-idle

step "calls found (verbatim search --database verbatim_demo)"
bin/verbatim search --database verbatim_demo

step "play one recording (verbatim play 1-1966@10.0.2.20 -o $data/1-1966.wav)"
bin/verbatim play 1-1966@10.0.2.20 -o "$data/1-1966.wav" --database verbatim_demo --brokers "$brokers" "${keys[@]}" "${objects[@]}"

cat <<EOF2

Where everything is:
  Kafka log and keyring                $data  (keyring.json: the keys; 0600)
  sealed recordings                    $data/objects/<tenant>/<yyyy>/<mm>/<dd>/<call>/ (.wav.sealed, .rtp.sealed)
  decrypted recording                  $data/1-1966.wav  (stereo 8 kHz: caller left, callee right)
  search tables                        ClickHouse $VERBATIM_CLICKHOUSE_ADDR, database verbatim_demo
  try                                  bin/verbatim search --database verbatim_demo --party sip:sipp@10.0.2.20:5060 --json
                                       bin/verbatim play 1-1968@10.0.2.20 -o /tmp/a-law.wav --database verbatim_demo \\
                                         --brokers $brokers --keyring $data/keyring.json --objects $data/objects
                                       (needs verbatim dev and ClickHouse running: see README.md)
EOF2
