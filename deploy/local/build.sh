#!/usr/bin/env bash
# `make build`: the binary users run, bin/verbatim, with every codec:
# G.729 through Debian's libbcg729 (cgo, -tags bcg729), installed here when
# missing. libbcg729 is GPL-3.0: a binary linked with it is conveyed under
# the GPL-3.0 (see LICENSE and README.md). Where it cannot be installed,
# the Apache-2.0-only build is made instead and G.729 streams are kept raw,
# labelled "not decodable"; this script says so.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
GO=${GO:-go}
have() { [ -f /usr/include/bcg729/decoder.h ] && command -v "${CC:-cc}" >/dev/null; }
if ! have; then
	s=""
	[ "$(id -u)" -eq 0 ] || s=sudo
	echo "[build] installing libbcg729-dev and gcc (G.729)" >&2
	$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbcg729-dev gcc >/dev/null 2>&1 ||
		{ $s apt-get update -qq >/dev/null 2>&1 && $s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbcg729-dev gcc >/dev/null 2>&1; } || true
fi
mkdir -p bin
if have; then
	CGO_ENABLED=1 "$GO" build -tags bcg729 -o bin/verbatim ./cmd/verbatim
	echo "[build] bin/verbatim: every codec, G.729 through libbcg729 (the binary is GPL-3.0)" >&2
else
	"$GO" build -o bin/verbatim ./cmd/verbatim
	echo "[build] warning: libbcg729-dev could not be installed: bin/verbatim does not decode G.729 (kept raw, labelled not decodable)" >&2
fi
