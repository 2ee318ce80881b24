#!/bin/bash
# usage: build_venv.sh V  -> /tmp/pp_versions/venv-V, log in build-V.log
V=$1; D=/tmp/pp_versions/venv-$V
PY=${PYBIN:-python3}
set -x
$PY -m venv $D || exit 1
R=/tmp/pp_versions/req-$V.txt; N=/tmp/pp_versions/nodeps-$V.txt
grep -v '^#' /work/main/requirements.txt | grep -v 'no-deps' | sed "s/^paddlepaddle==.*/paddlepaddle==$V/" | sed 's/#.*//' | grep -v '^\s*$' > $R
grep 'no-deps' /work/main/requirements.txt | sed 's/#.*//' | sed 's/ *$//' > $N
$D/bin/pip install -q --upgrade pip
$D/bin/pip install -r $R || exit 2
$D/bin/pip install --no-deps -r $N || exit 3
cd /work/main && PYTHONPATH=/work/main $D/bin/python -c "import detdistill, paddle, ppdet; print('IMPORT OK', paddle.__version__)"
