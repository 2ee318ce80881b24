#!/usr/bin/env bash
# The main job on CPU: install the environment (first run only), write the
# built-in synthetic VOC dataset (the converged profile's), evaluate the
# teacher that the converged benchmark trained (committed under
# results/converged/runs/teacher_s0), train the baseline student and the
# L2-distilled student to their plateau (3200 steps each, two at a time), and
# print one table and the verdict (teacher, baseline, L2, mAP, gap recovered).
# Extra arguments go to tools/benchmark.py (e.g. --seeds 0,1 or --jobs 1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
py=.venv/bin/python
exec $py tools/benchmark.py --profile quick --seeds 0 "$@"
