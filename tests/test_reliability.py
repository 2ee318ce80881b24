"""The review's defects (issue 14), each on a real run: checkpoint pairs,
divergence reports, the log's teacher_loss column, conflicting flags, EMA,
AMP state and keys nothing implements."""
import json
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import STUDENT, TEACHER, script, tiny_opts
from detdistill.errors import CheckpointError, ConfigError, NonFiniteLossError
from detdistill.config import build_model, load_config
from detdistill.engine import Trainer
from detdistill.engine.checkpoint import load_checkpoint

RUN = 'yolov3_mobilenet_v1_demo'


def _weights(path):
    return {k: v.numpy() for k, v in paddle.load(path).items()}


def _history(save):
    with open(os.path.join(save, RUN, 'history.jsonl')) as f:
        return [json.loads(line) for line in f]


# -- 1. a checkpoint is a consistent pair -----------------------------------

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


# -- 5. divergence: named step and loss, nothing saved after it --------------

def test_non_finite_distill_loss_is_named(demo_voc, tmp_path,
                                          teacher_weights):
    distill = script('slim/distillation/distill.py')
    save = str(tmp_path / 'run')
    with pytest.raises(SystemExit):
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
                      teacher_weights, '-o'] + tiny_opts(
                          demo_voc, save, 1, distill_loss_weight=1e38))
    assert not os.path.exists(os.path.join(save, RUN, '0.pdparams'))


def test_only_the_optimised_loss_is_guarded(demo_voc, tmp_path):
    trainer = Trainer(load_config(STUDENT, tiny_opts(demo_voc,
                                                     str(tmp_path))))
    inf = paddle.to_tensor(float('inf'))
    trainer._check_finite({'loss': paddle.to_tensor(1.5),
                           'teacher_loss': inf})  # log-only: no stop
    with pytest.raises(NonFiniteLossError,
                       match=r'step 1 \(epoch 0\): loss=inf, distill_l2=inf'):
        trainer._check_finite({'loss': inf, 'det_loss': paddle.to_tensor(1.),
                               'distill_l2': inf})


def test_an_unrelated_error_is_not_called_divergence(demo_voc, tmp_path):
    """An error whose text contains 'nan' (here: a missing input named
    'nan_check') with finite weights goes up as it is."""
    trainer = Trainer(load_config(STUDENT, tiny_opts(demo_voc,
                                                     str(tmp_path))))

    class Broken(paddle.nn.Layer):
        def forward(self, data):
            raise ValueError("input 'nan_check' is missing")
    with pytest.raises(ValueError, match="input 'nan_check' is missing"):
        trainer._forward(Broken(), {})


# -- 2. teacher_loss is the logged step's -----------------------------------

def test_teacher_loss_is_that_of_the_logged_step(demo_voc, tmp_path,
                                                 teacher_weights):
    distill = script('slim/distillation/distill.py')
    save = str(tmp_path / 'run')
    trainer = distill.main(['-c', STUDENT, '-t', TEACHER,
                            '--teacher_pretrained', teacher_weights, '-o'] +
                           tiny_opts(demo_voc, save, 1, log_iter=3,
                                     distill_loss_weight=0.01))
    train = [r for r in _history(save) if r['kind'] == 'train']
    assert [r['step'] for r in train] == [3, 6, 8]
    assert all('teacher_loss' in r for r in train)
    # Recompute the teacher's loss on the batches of steps 3, 6 and 8: the
    # data order is a function of (seed, epoch).
    distiller = trainer.model
    batches = list(trainer._epoch_batches(0))
    for r in train:
        batch = batches[r['step'] - 1]
        t_out = distiller.teacher.outputs(batch)
        want = float(distiller._teacher_loss(t_out, batch))
        assert r['teacher_loss'] == pytest.approx(want, rel=1e-5), r['step']


# -- 3. conflicting or ignored distillation flags ---------------------------

@pytest.mark.parametrize('opts, message', [
    (['use_fine_grained_loss=true', 'distill_loss=kl'],
     'use_fine_grained_loss=true asks for the fine-grained loss but the '
     'config asks for KLDistill: set one of them'),
    (['use_fine_grained_loss=true', 'Distill.losses.kl.weight=3'],
     'use_fine_grained_loss=true asks for the fine-grained loss but the '
     'config asks for KLDistill: set one of them'),
    (['temperature=2'], "Distill.losses.l2: L2Distill has no option "
                        "'temperature'"),
    (['use_fine_grained_loss=true', 'temperature=2'],
     "Distill.losses.fine_grained: FineGrainedDistill has no option "
     "'temperature'"),
    (['Distill.losses.kl.temprature=2'], "Distill.losses.kl: KLDistill has "
     "no option 'temprature' \\(did you mean 'temperature'\\?\\)"),
    (['distill_loss=kl', 'temperature=0'],
     'temperature must be a finite number > 0, got 0.0'),
    (['distill_loss=kl', 'temperature=-1'],
     'temperature must be a finite number > 0, got -1.0'),
])
def test_conflicting_flags_are_errors(opts, message):
    from detdistill.distill.distiller import build_distiller
    cfg = load_config(STUDENT, opts)
    with pytest.raises(ConfigError, match=message):
        build_distiller(cfg, build_model(cfg), build_model(load_config(
            TEACHER)))


def test_temperature_flag_reaches_the_kl_loss(demo_voc, tmp_path,
                                              teacher_weights):
    distill = script('slim/distillation/distill.py')
    trainer = distill.main(['-c', STUDENT, '-t', TEACHER,
                            '--teacher_pretrained', teacher_weights,
                            '--temperature', '4', '-o'] + tiny_opts(
                                demo_voc, str(tmp_path), 1,
                                distill_loss='kl', distill_loss_weight=0.01))
    assert trainer.model.losses[0].module.temperature == 4.0


# -- 9. EMA ------------------------------------------------------------------

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
    differ = [k for k in a_w if not np.array_equal(
        a_w[k].numpy(), a_t['model'][k].numpy())]
    assert len(differ) > 0.9 * len(a_w)  # EMA is not the raw model


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


# -- 6. AMP ------------------------------------------------------------------

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


# -- keys nothing implements -------------------------------------------------

@pytest.mark.parametrize('key', ['use_xpu', 'to_static', 'print_flops'])
def test_unimplemented_keys_are_refused_when_set(key):
    with pytest.raises(ConfigError, match='{}: True is not supported'.format(
            key)):
        load_config(STUDENT, ['{}=true'.format(key)])
    load_config(STUDENT, ['{}=false'.format(key)])  # off is fine
