#!/usr/bin/env bash
# Rebuilds tests/fixtures/geo/ with a pinned MaxMind-DB writer from PyPI in a throwaway virtualenv.
# The output is committed; run this only when a fixture must change.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "mmdb-writer==0.2.7" "netaddr==1.3.0"
"$venv/bin/python" "$here/build-geo-fixtures.py" "${1:-$here/../tests/fixtures/geo}"
