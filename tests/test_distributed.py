"""Data-parallel training as users start it on several GPUs, here with two
CPU processes: `python -m paddle.distributed.launch --nproc_per_node 2` on
the real train and distill CLIs. Gradients are all-reduced, so the ranks end
with the same weights; each rank reads its own share of the data, so their
BatchNorm statistics (computed locally) differ."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, STUDENT, TEACHER, tiny_opts
from detdistill.config import build_model, load_config


def _launch(tmp_path, tool, args):
    out = tmp_path / 'ranks'
    out.mkdir()
    cmd = [sys.executable, '-m', 'paddle.distributed.launch',
           '--nproc_per_node', '2', '--log_dir', str(tmp_path / 'log'),
           os.path.join(ROOT, 'tests', 'dist_worker.py'), tool, str(out)
           ] + args
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    logs = ''.join(open(p).read()[-3000:] for p in sorted(
        (tmp_path / 'log').glob('workerlog.*')))
    assert proc.returncode == 0, proc.stdout[-2000:] + logs
    return [paddle.load(str(out / 'rank{}.pdparams'.format(r)))
            for r in (0, 1)], logs


def _check_ranks(ranks, logs, save_dir):
    r0, r1 = ranks
    stats = [k for k in r0 if k.endswith(('_mean', '_variance'))]
    params = [k for k in r0 if k not in stats]
    for k in params:  # all-reduced gradients: identical updates
        np.testing.assert_allclose(r0[k].numpy(), r1[k].numpy(), atol=1e-6,
                                   err_msg=k)
    # each rank normalised its own images: local BN statistics differ
    assert any(not np.allclose(r0[k].numpy(), r1[k].numpy()) for k in stats)
    # 32 images, batch 4 per rank, 2 ranks: 4 steps per epoch on each
    assert '[   4/4] step: 8' in logs and '[   5/' not in logs
    # one writer: rank 0's checkpoint equals rank 0's weights
    final = paddle.load(os.path.join(save_dir, 'yolov3_mobilenet_v1_demo',
                                     'model_final.pdparams'))
    for k in params:
        np.testing.assert_array_equal(final[k].numpy(), r0[k].numpy())


@pytest.mark.parametrize('tool', ['train', 'distill'])
def test_two_processes_train_in_sync(demo_voc, tmp_path, tool):
    save_dir = str(tmp_path / 'out')
    vdl = tmp_path / 'vdl'
    args = ['-c', STUDENT, '--use_vdl', '--vdl_log_dir', str(vdl), '-o'] + \
        tiny_opts(demo_voc, save_dir, epoch=2)
    if tool == 'distill':
        teacher = str(tmp_path / 'teacher.pdparams')
        paddle.seed(3)
        paddle.save(build_model(load_config(TEACHER)).state_dict(), teacher)
        args += ['-t', TEACHER, '--teacher_pretrained', teacher]
    ranks, logs = _launch(tmp_path, tool, args)
    _check_ranks(ranks, logs, save_dir)
    # one VisualDL writer (rank 0), not one per rank in the same directory
    assert len([f for f in os.listdir(vdl) if 'vdlrecords' in f]) == 1
