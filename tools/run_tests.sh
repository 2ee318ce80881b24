#!/usr/bin/env bash
# The test suite, on CPU: installs the environment on first use (tools/setup_env.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
exec .venv/bin/python -m pytest -q tests "$@"
