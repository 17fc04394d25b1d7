#!/usr/bin/env bash
# `make fuzz`: run every go test -fuzz target for FUZZTIME each (default 60s).
# Targets are found by name (func FuzzXxx in *_test.go), so new ones join
# automatically. Crashers are written by Go under the package's testdata/fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fuzztime=${FUZZTIME:-60s}
# Go minimizes every new interesting input for up to 60 s by default, and
# the executions spent minimizing are not counted: with 2 workers a target
# seems to stall at 0 execs/s for minutes. Keep minimizing short; crashers
# are still minimized (that is what the time is for).
minimize=${FUZZMINIMIZETIME:-2s}
fail=0
while IFS=: read -r file fn; do
	pkg=./$(dirname "$file")
	echo "==> $pkg $fn ($fuzztime)"
	go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" || fail=1
done < <(grep -rHoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed -E 's/:func /:/' | sed 's|^\./||')
exit $fail
