#!/usr/bin/env bash
# Tests the Argo CD health scripts in contrib/argocd against their sample objects with
# Debian's Lua 5.4 and 5.1 (installed by hack/tools.sh, like the Python with PyYAML used to read them).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}
cases=$(mktemp --suffix=.lua)
trap 'rm -f "$cases"' EXIT
cd "$ROOT"
"$TOOLS/venv/bin/python" tests/argocd/to_lua.py contrib/argocd >"$cases"
# Argo CD runs health scripts with gopher-lua, a Lua 5.1: test with 5.1 as well as 5.4.
for lua in lua5.4 lua5.1; do
  "$lua" tests/argocd/harness.lua "$cases"
done
