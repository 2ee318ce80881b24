#!/usr/bin/env bash
# The main job on the built-in demo data, on CPU: install the environment (first
# run only), write the synthetic VOC dataset, train the teacher and the baseline
# student, distill with the L2 loss, and print one table
# (teacher, baseline, distilled students, mAP, gap recovered).
# Extra arguments go to tools/benchmark.py (e.g. --seeds 0,1 or -o epoch=10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
py=.venv/bin/python
[ -f dataset/demo_voc/trainval.txt ] || $py tools/make_demo_voc.py --out dataset/demo_voc
exec $py tools/benchmark.py --methods teacher,baseline,l2 --seeds 0 \
    --out output/demo "$@"
