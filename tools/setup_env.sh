#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install requirements.txt.
# Lines tagged "no-deps" go in with --no-deps: their published metadata does not resolve (see
# requirements.txt). Re-running is cheap: a stamp of requirements.txt skips a finished install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
grep -v 'no-deps' "$root/requirements.txt" > "$tmp/deps.txt"
grep 'no-deps' "$root/requirements.txt" | grep -v '^#' | sed 's/#.*//' > "$tmp/nodeps.txt"
echo "[setup_env] installing the stack into $venv (first run downloads ~400 MB)"
$pip install -q -r "$tmp/deps.txt"
$pip install -q --no-deps -r "$tmp/nodeps.txt"
"$venv/bin/python" -c "import paddle, ppdet, ppdet.engine, ppdet.metrics, paddleslim" 2>/dev/null \
  || { echo "[setup_env] import check failed" >&2; "$venv/bin/python" -c "import paddle, ppdet, ppdet.engine, ppdet.metrics, paddleslim"; exit 1; }
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv"
