"""A training or distillation process killed (SIGKILL, no clean-up)
mid-run: its last finished checkpoint loads, and `-r` from it ends with the
weights of a run that was never interrupted."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from conftest import ROOT, STUDENT, TEACHER, tiny_opts

EPOCHS = 6


@pytest.mark.parametrize('tool', ['train', 'distill'])
def test_killed_run_resumes_to_the_uninterrupted_weights(
        demo_voc, tmp_path, teacher_weights, tool):
    if tool == 'train':
        script = ['tools/train.py', '-c', STUDENT]
        extra = {}
    else:
        script = ['slim/distillation/distill.py', '-c', STUDENT, '-t',
                  TEACHER, '--teacher_pretrained', teacher_weights]
        extra = {'distill_loss_weight': 0.01}

    def _cmd(save_dir, demo_voc, *resume):
        return [sys.executable] + script + list(resume) + ['-o'] + \
            tiny_opts(demo_voc, save_dir, EPOCHS, **extra)
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    subprocess.run(_cmd(full, demo_voc), cwd=ROOT, check=True,
                   capture_output=True)
    out = os.path.join(part, 'yolov3_mobilenet_v1_demo')
    proc = subprocess.Popen(_cmd(part, demo_voc), cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not os.path.exists(os.path.join(out, '1.pdopt')):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # wherever it is, maybe mid-write
    assert proc.wait() == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, 'model_final.pdparams'))
    subprocess.run(_cmd(part, demo_voc, '-r', os.path.join(out, '1')),
                   cwd=ROOT, check=True, capture_output=True)
    a = paddle.load(os.path.join(full, 'yolov3_mobilenet_v1_demo',
                                 'model_final.pdparams'))
    b = paddle.load(os.path.join(out, 'model_final.pdparams'))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)
