#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv, install requirements.txt, then
# the project itself in editable mode (pyproject.toml: the detdistill and bench packages).
# Lines tagged "no-deps" go in with --no-deps: their published metadata does not resolve (see
# requirements.txt). Re-running is cheap: a stamp of requirements.txt, pyproject.toml and this
# checkout's path skips a finished install; a change to either file (or another checkout using
# the same VENV) installs again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
stamp="$venv/.requirements.sha256"
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1) $root"
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
# The project, editable and without dependencies (requirements.txt above is the pinned stack).
# The venv's own setuptools builds it when it can make an editable wheel by itself (70.1 or
# newer, or an older one beside `wheel`): nothing to download. Python 3.11's venv ships
# setuptools 65.5 without `wheel`, so there pip builds it in an isolated environment with a
# setuptools from the index (or pip's cache). Its notice that an editable install imports from
# the checkout is what this install is for: not shown.
quiet="ignore:Editable installation"
if "$venv/bin/python" -c "
import importlib.util, sys
import setuptools
v = tuple(int(x) for x in setuptools.__version__.split('.')[:2])
sys.exit(0 if v >= (70, 1) or importlib.util.find_spec('wheel') else 1)" 2>/dev/null; then
  PYTHONWARNINGS="$quiet" $pip install -q --no-deps --no-build-isolation -e "$root"
else
  PYTHONWARNINGS="$quiet" $pip install -q --no-deps -e "$root"
fi
# Checked from outside the checkout, so that the packages come from the install, not the cwd
# (detdistill first: it quiets ppdet's import-time notices).
check="import detdistill, bench, paddle, ppdet, ppdet.engine, ppdet.metrics, paddleslim"
(cd / && "$venv/bin/python" -c "$check" 2>/dev/null) \
  || { echo "[setup_env] import check failed" >&2; (cd / && "$venv/bin/python" -c "$check"); exit 1; }
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv"
