#!/usr/bin/env bash
# `make loadtest`: the whole pipeline at scale on the local stack. Writes a
# capture of CALLS concurrent G.711 calls talking for DURATION (verbatim
# loadtest), then runs ingest, process and project over it, one after the
# other, and prints per stage the wall time and the CPU seconds of verbatim
# and of each server (Kafka, ClickHouse, MinIO, Vault). Real time for the
# target is DURATION: the sum of every stage's CPU seconds over DURATION
# is the cores the stack needs to record that many calls live.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
calls=${CALLS:-5000}
duration=${DURATION:-10s}
work=$(mktemp -d "${TMPDIR:-/tmp}/verbatim-load.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$here/stack.sh" up >/dev/null
# shellcheck disable=SC1091
. "${VERBATIM_STACK_DIR:-$repo/.stack}/env.sh"
go build -o "$work/verbatim" ./cmd/verbatim
v=$work/verbatim

names=() pids=()
while read -r name _ _ rest; do
	pid=$(sed -nE 's/.*\(pid ([0-9]+)\).*/\1/p' <<<"$rest")
	[ -n "$pid" ] && names+=("$name") && pids+=("$pid")
done < <("$here/stack.sh" status)
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; } # user+system ticks

stage() {
	local name=$1; shift
	local before=() after=() i real user sys
	for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
	TIMEFORMAT='%R %U %S'
	{ time "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }; } 2>"$work/time"
	for p in "${pids[@]}"; do after+=("$(cpu "$p")"); done
	read -r real user sys <"$work/time"
	printf '%-8s wall %6.1fs  verbatim %6.1f cpu-s' "$name" "$real" "$(awk "BEGIN{print $user+$sys}")"
	for i in "${!pids[@]}"; do
		printf '  %s %.1f' "${names[$i]}" "$(awk "BEGIN{print (${after[$i]}-${before[$i]})/$tick}")"
	done
	echo
	grep -E 'calls,|recordings stored|projected' "$work/out" | tr '\r' '\n' | tail -n 1 | sed 's/^/         /'
}

echo "== $calls calls for $duration (CPU seconds per stage; idle exits add 10 s of wall time to process and project)"
"$v" loadtest --calls "$calls" --duration "$duration" -o "$work/load.pcap"
"$v" topics --create >/dev/null
# A tenant, consumer groups and a search database of this run's own: the
# run measures its calls only, whatever earlier runs left on the stack.
run=load$(date +%s)
# The token goes to curl on stdin (printf is the shell's own), never in argv.
printf 'X-Vault-Token: %s\n' "$VERBATIM_VAULT_TOKEN" | curl -fsS --cacert "$VERBATIM_VAULT_CA" -X POST -H @- -d '{"type":"aes256-gcm96"}' \
	"$VERBATIM_VAULT_ADDR/v1/transit/keys/verbatim-tenant-$run" >/dev/null
stage ingest "$v" ingest pcap --tenant "$run" "$work/load.pcap"
stage process "$v" process --tenants "$run" --group "$run" --instance "$run" --exit-when-idle --quiet --spool "$work"
stage project "$v" project search --group "$run-search" --database "$run" --exit-when-idle
"$v" search --tenant "$run" --database "$run" --limit 1 | tail -n 1
