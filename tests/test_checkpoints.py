"""Checkpoints and resume on real runs of tools/train.py: a checkpoint is a
consistent pair of files or it is refused, and the EMA and AMP state is
saved with it and resumes exactly. (Exact resume with the distillation
features is tested with each feature; after a stop signal or a kill in
tests/test_stop.py.)"""
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import STUDENT, script, tiny_opts
from detdistill.errors import CheckpointError, ConfigError
from detdistill.config import load_config
from detdistill.engine import Trainer
from detdistill.engine.checkpoint import load_checkpoint

RUN = 'yolov3_mobilenet_v1_demo'


def _weights(path):
    return {k: v.numpy() for k, v in paddle.load(path).items()}


# -- a checkpoint is a consistent pair ---------------------------------------

def test_a_pair_from_two_saves_is_refused(demo_voc, tmp_path):
    """What a kill between writing best_model.pdparams and best_model.pdopt
    leaves on disk: the new weights beside the old optimizer state and
    position. Resuming it must stop, naming both files."""
    train = script('tools/train.py')
    save = str(tmp_path / 'run')
    train.main(['-c', STUDENT, '-o'] + tiny_opts(demo_voc, save, 2))
    run = os.path.join(save, RUN)
    shutil.copy(os.path.join(run, '1.pdparams'),
                os.path.join(run, '0.pdparams'))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(os.path.join(run, '0'))
    msg = str(e.value)
    assert 'come from different saves' in msg and run + '/0.pdparams' in msg
    assert run + '/1' in msg  # points at a checkpoint that is whole
    with pytest.raises(SystemExit) as e:
        train.main(['-c', STUDENT, '-r', os.path.join(run, '0'), '-o'] +
                   tiny_opts(demo_voc, save, 3))
    assert e.value.code == 1
    weights, training = load_checkpoint(os.path.join(run, '1'))
    assert training['state']['step'] == 16
    assert not [f for f in os.listdir(run) if '.tmp' in f]


# -- EMA ---------------------------------------------------------------------

def _train(demo_voc, save, epochs, *extra, resume=None):
    train = script('tools/train.py')
    argv = ['-c', STUDENT] + (['-r', resume] if resume else []) + ['-o'] + \
        tiny_opts(demo_voc, save, epochs) + list(extra)
    return train.main(argv)


def test_ema_weights_are_saved_and_resume_exactly(demo_voc, tmp_path):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    _train(demo_voc, full, 2, 'use_ema=true', 'ema_decay=0.9')
    _train(demo_voc, part, 1, 'use_ema=true', 'ema_decay=0.9')
    _train(demo_voc, part, 2, 'use_ema=true', 'ema_decay=0.9',
           resume=os.path.join(part, RUN, '0'))
    a_w, a_t = load_checkpoint(os.path.join(full, RUN, 'model_final'))
    b_w, b_t = load_checkpoint(os.path.join(part, RUN, 'model_final'))
    for k in a_w:  # the averaged weights ...
        np.testing.assert_allclose(a_w[k].numpy(), b_w[k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)
        np.testing.assert_allclose(a_t['model'][k].numpy(),  # ... and raw
                                   b_t['model'][k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)
    assert a_t['ema']['step'] == 16
    # EMA is not the raw model: every tensor moved during training, so
    # every averaged one differs from the last
    same = [k for k in a_w if np.array_equal(a_w[k].numpy(),
                                             a_t['model'][k].numpy())]
    assert same == []


def test_ema_with_zero_decay_is_the_model(demo_voc, tmp_path):
    """decay 0: the average is the latest weights, exactly."""
    save = str(tmp_path / 'run')
    _train(demo_voc, save, 1, 'use_ema=true', 'ema_decay=0.0')
    w, t = load_checkpoint(os.path.join(save, RUN, 'model_final'))
    for k in w:
        assert np.array_equal(w[k].numpy(), t['model'][k].numpy()), k


def test_ema_setting_must_match_on_resume(demo_voc, tmp_path):
    save = str(tmp_path / 'run')
    _train(demo_voc, save, 1)
    with pytest.raises(SystemExit):
        _train(demo_voc, save, 2, 'use_ema=true',
               resume=os.path.join(save, RUN, '0'))


# -- AMP ---------------------------------------------------------------------

def test_amp_on_cpu_trains_and_stores_its_scaler_state(demo_voc, tmp_path):
    """Paddle disables GradScaler and auto_cast on CPU, so here `amp: true`
    must train exactly like fp32 and write the (empty) scaler state that a
    GPU run would fill; on resume a saved scaler state reaches
    GradScaler.load_state_dict (GPU only, not run here)."""
    a, b = str(tmp_path / 'fp32'), str(tmp_path / 'amp')
    _train(demo_voc, a, 1)
    trainer = _train(demo_voc, b, 1, 'amp=true')
    assert trainer.scaler is not None and not trainer.scaler.is_enable()
    wa = _weights(os.path.join(a, RUN, 'model_final.pdparams'))
    wb = _weights(os.path.join(b, RUN, 'model_final.pdparams'))
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    _, training = load_checkpoint(os.path.join(b, RUN, 'model_final'))
    assert training['scaler'] == {}


def test_amp_level_is_checked(demo_voc, tmp_path):
    with pytest.raises(ConfigError, match="amp_level must be 'O1' or 'O2'"):
        Trainer(load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)) + [
            'amp=true', 'amp_level=O3']))
