#!/bin/bash
# cross-version: runtime venv X on model exported by Y
cd /work/main
run() { # runtime_python exp_dir tag mode
  PYTHONPATH=/work/main OMP_NUM_THREADS=1 nice -n 10 timeout 300 $1 /tmp/pp_versions/scripts/infer_one.py $2/nonms $4 /tmp/pp_versions/out/cross-$3-$4.npz > /tmp/pp_versions/out/cross-$3-$4.log 2>&1
  rc=$?
  echo "$3 $4 rc=$rc $(sed 's/\x1b\[[0-9;]*m//g' /tmp/pp_versions/out/cross-$3-$4.log | grep -E 'Running PIR pass' | tail -1) $(grep -E 'NotImplementedError|FatalError|Error:' /tmp/pp_versions/out/cross-$3-$4.log | tail -1 | cut -c1-200)"
  if [ $rc = 0 ]; then /tmp/pp_versions/venv-3.2.2/bin/python -c "
import numpy as np; a=np.load('/tmp/pp_versions/out/cross-$3-$4.npz'); b=np.load('$2/nonms/ref.npz')
print('   vs exporter dygraph ref:', [float(np.abs(a[k]-b[k]).max()) for k in a.files])"; fi
}




run /tmp/pp_versions/venv-3.2.2/bin/python /tmp/pp_versions/exp-3.3.1 rt3.2.2_on_exp3.3.1 plain
