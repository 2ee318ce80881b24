"""Data-parallel training as users start it on several GPUs, here with two
CPU processes: `python -m paddle.distributed.launch --nproc_per_node 2` on
the real train and distill CLIs. Gradients are all-reduced, so the ranks end
with the same weights; each rank reads its own share of the data (labeled
and unlabeled images), so their BatchNorm statistics (computed locally)
differ."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from conftest import ROOT, STUDENT, TEACHER, run_tool, tiny_opts
from detdistill.config import build_model, load_config


def _launch(tmp_path, tool, args):
    out = tmp_path / 'ranks'
    out.mkdir()
    cmd = [sys.executable, '-m', 'paddle.distributed.launch',
           '--nproc_per_node', '2', '--log_dir', str(tmp_path / 'log'),
           os.path.join(ROOT, 'tests', 'dist_worker.py'), tool, str(out)
           ] + args
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
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


_RANK1_FAILS = textwrap.dedent('''
    import os
    import detdistill  # noqa
    import ppdet.data.transform as T
    from ppdet.data.transform.operators import BaseOperator, register_op

    @register_op
    class FailOnRank1(BaseOperator):
        seen = 0

        def apply(self, sample, context=None):
            FailOnRank1.seen += 1
            if os.environ['PADDLE_TRAINER_ID'] == '1' and \\
                    FailOnRank1.seen == 10:
                raise ValueError('rank 1 cannot read its tenth image')
            return sample

    T.FailOnRank1 = FailOnRank1
    from detdistill.cli import TrainArgsParser, main_guard, run_training
    from detdistill.config import load_config
    from detdistill.engine import Trainer

    @main_guard
    def main():
        cfg = load_config({cfg!r}, {opts!r})
        cfg['TrainReader']['sample_transforms'].insert(
            1, {{'FailOnRank1': {{}}}})
        run_training(Trainer(cfg), TrainArgsParser().parse_args(['-c', 'x']))

    main()
''')


def test_one_failing_rank_ends_the_whole_job(demo_voc, tmp_path):
    """Rank 1 raises in its third step; rank 0 would wait for its gradients
    forever. Paddle's launcher sees the failure and stops rank 0 (SIGTERM,
    then SIGKILL after 30 s), so the job ends with an error."""
    script = tmp_path / 'worker.py'
    script.write_text(_RANK1_FAILS.format(cfg=STUDENT, opts=tiny_opts(
        demo_voc, str(tmp_path / 'out'), epoch=5)))
    r = run_tool(['-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
                  '--log_dir', str(tmp_path / 'log'), str(script)], 240)
    assert r.returncode != 0
    logs = [open(p).read() for p in sorted(
        (tmp_path / 'log').glob('workerlog.*'))]
    assert 'ValueError: rank 1 cannot read its tenth image' in logs[1]
    assert 'step: 3 ' not in logs[0]  # rank 0 never finished a third step


def test_two_processes_shard_the_unlabeled_stream(demo_voc, tmp_path,
                                                  teacher_weights,
                                                  unlabeled_list):
    save = str(tmp_path / 'out')
    ranks, logs = _launch(tmp_path, 'distill', [
        '-c', STUDENT, '-t', TEACHER, '--teacher_pretrained', teacher_weights,
        '--unlabeled_list', unlabeled_list, '-o'] +
        tiny_opts(demo_voc, save, 1, distill_loss_weight=0.01,
                  unlabeled_batch_size=2))
    r0, r1 = ranks
    for k in r0:  # all-reduced gradients, unlabeled term included
        if not k.endswith(('_mean', '_variance')):
            np.testing.assert_allclose(r0[k].numpy(), r1[k].numpy(),
                                       atol=1e-6, err_msg=k)
    assert '[   4/4] step: 4' in logs and 'distill_loss_unlabeled' in logs
    # 8 unlabeled images, 2 per rank and step: each rank reads its own half
    streams = [json.load(open(str(tmp_path / 'ranks' / 'unlabeled{}.json'
                                  .format(r)))) for r in (0, 1)]
    assert [len(s) for s in streams] == [4, 4]
    for step in (0, 2):  # one unlabeled epoch = 2 steps: all 8, once
        seen = sum(streams[0][step:step + 2] + streams[1][step:step + 2], [])
        assert sorted(seen) == list(range(8))
