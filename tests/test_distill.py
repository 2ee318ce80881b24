"""slim/distillation/distill.py and the distiller on real demo data: the
teacher stays frozen, gradients reach only the student, pairing errors are
clear, resume continues the same trajectory, the result is an ordinary
student checkpoint; a diverging run stops naming its step, the log's
teacher_loss is the logged step's, and conflicting flags are errors."""
import functools
import http.server
import json
import os
import threading

import numpy as np
import paddle
import pytest

from conftest import (STUDENT, TEACHER, assert_same_results,
                      evaluate_independently, script, tiny_opts)
from detdistill.errors import ConfigError, PairingError
from detdistill.config import build_model, load_config
from detdistill.distill.distiller import build_distiller

from detdistill.engine import Trainer

RUN = 'yolov3_mobilenet_v1_demo'

def _distiller(demo_voc, tmp_path, teacher_weights, *opts):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)) +
                      list(opts))
    student, teacher = build_model(cfg), build_model(load_config(TEACHER))
    teacher.set_state_dict(paddle.load(teacher_weights))
    return cfg, build_distiller(cfg, student, teacher)


def _reference_distill_loss(distiller, batch):
    """distill_loss of `batch` from the float64 NumPy references of
    tests/test_distill_losses.py, on the paired outputs of a separate
    forward of each model (recorded by name): the entry's weight times the
    components summed over the pairs."""
    from detdistill.distill.pairing import OutputRecorder
    from test_distill_losses import ref_fine, ref_kl, ref_l2
    loss = distiller.losses[0]
    module = loss.module
    s_names = [s for s, _ in loss.pairs]
    t_names = [t for _, t in loss.pairs]
    with paddle.no_grad():
        with OutputRecorder(distiller.student, s_names) as s_rec:
            distiller.student(batch)
        with OutputRecorder(distiller.teacher.model, t_names) as t_rec:
            distiller.teacher.model(batch)
    ref = {'l2': ref_l2,
           'fine_grained': lambda s, t: ref_fine(
               s, t, module.obj_target, num_classes=module.num_classes),
           'kl': lambda s, t: ref_kl(
               s, t, module.temperature, module.cls_form,
               num_classes=module.num_classes)}[loss.name]
    with np.errstate(over='ignore'):  # exp of large logits: inf, then 0
        return loss.weight * sum(sum(ref(s_rec.outputs[s].numpy(),
                                         t_rec.outputs[t].numpy()).values())
                                 for s, t in loss.pairs)


@pytest.mark.parametrize('loss', ['l2', 'fine_grained', 'kl'])
def test_teacher_is_frozen_and_only_student_learns(demo_voc, tmp_path,
                                                   teacher_weights, loss):
    # L2 at a fixed weight: with `auto` the term equals the detection loss
    # by construction, which would not test the formula
    cfg, distiller = _distiller(demo_voc, tmp_path, teacher_weights,
                                'Distill.losses.{}.weight={}'.format(
                                    loss, 100 if loss == 'l2' else 1000))
    trainer = Trainer(cfg, model=distiller, detector=distiller.student)
    for _ in range(50):  # into the LR warmup, so updates are visible
        trainer.lr.step()
    t_before = {k: v.numpy().copy() for k, v in
                distiller.teacher.model.state_dict().items()}
    s_before = {k: v.numpy().copy() for k, v in
                distiller.student.state_dict().items()}
    trainable = [p for p in distiller.student.parameters()
                 if not p.stop_gradient]
    distiller.train()
    assert not distiller.teacher.model.training  # BN stays in eval mode
    assert distiller.teacher.cache is None  # the demo reader: recomputed
    batches = iter(trainer.loader)
    for _ in range(3):
        batch = next(batches)
        want = _reference_distill_loss(distiller, batch)
        out = distiller(batch)
        assert {'loss', 'det_loss', 'distill_loss'} <= set(out)
        assert float(out['distill_loss']) == pytest.approx(want, rel=1e-5)
        out['loss'].backward()
        assert all(p.grad is None for p in distiller.teacher.model.parameters())
        # every trainable student parameter gets a gradient
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for p in trainable)
        trainer.optimizer.step()
        trainer.optimizer.clear_grad()
    for k, v in distiller.teacher.model.state_dict().items():
        assert np.array_equal(v.numpy(), t_before[k]), k  # BN stats included
    # every student tensor moved: the parameters by the optimizer, the
    # BatchNorm statistics by the training-mode forwards
    unchanged = [k for k, v in distiller.student.state_dict().items()
                 if np.array_equal(v.numpy(), s_before[k])]
    assert unchanged == []


def test_unknown_pair_name_lists_candidates(demo_voc, tmp_path,
                                            teacher_weights):
    with pytest.raises(PairingError, match=r'yolo_head\.yolo_output\.2'):
        _distiller(demo_voc, tmp_path, teacher_weights,
                   "distill_pairs=[[yolo_head.yolo_output.0, "
                   "yolo_head.out_conv]]")


def test_shape_mismatch_lists_both_models(demo_voc, tmp_path,
                                          teacher_weights):
    # pair a student head level with a teacher level of another stride
    cfg, distiller = _distiller(
        demo_voc, tmp_path, teacher_weights,
        "distill_pairs=[[yolo_head.yolo_output.0, yolo_head.yolo_output.1]]")
    trainer = Trainer(cfg, model=distiller, detector=distiller.student)
    distiller.train()
    with pytest.raises(PairingError) as e:
        distiller(next(iter(trainer.loader)))
    msg = str(e.value)
    assert 'student outputs' in msg and 'teacher outputs' in msg
    assert '[4, 33, 5, 5]' in msg and '[4, 33, 10, 10]' in msg


def _history(run):
    path = os.path.join(run, RUN, 'history.jsonl')
    return [json.loads(line) for line in open(path)]


def test_resume_continues_the_same_trajectory(demo_voc, tmp_path,
                                              teacher_weights):
    distill = script('slim/distillation/distill.py')
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    base = ['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
            teacher_weights, '-o']
    # an untrained teacher's logits are large: a small weight keeps it finite
    w = {'distill_loss_weight': 0.01}
    distill.main(base + tiny_opts(demo_voc, full, 3, **w))
    distill.main(base + tiny_opts(demo_voc, part, 1, **w))
    prefix = os.path.join(part, 'yolov3_mobilenet_v1_demo', '0')
    distill.main(['-r', prefix] + base + tiny_opts(demo_voc, part, 3, **w))
    a = [r for r in _history(full) if r['kind'] == 'train']
    b = [r for r in _history(part) if r['kind'] == 'train']
    assert [r['step'] for r in a] == [r['step'] for r in b] == \
        list(range(2, 25, 2))
    for ra, rb in zip(a, b):
        for k in ('loss', 'det_loss', 'distill_loss'):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (ra['step'], k)
    wa = paddle.load(os.path.join(full, 'yolov3_mobilenet_v1_demo',
                                  'model_final.pdparams'))
    wb = paddle.load(os.path.join(part, 'yolov3_mobilenet_v1_demo',
                                  'model_final.pdparams'))
    for k in wa:
        np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_distill_from_url_then_eval(demo_voc, tmp_path, teacher_weights,
                                    monkeypatch):
    distill = script('slim/distillation/distill.py')
    eval_tool = script('tools/eval.py')
    monkeypatch.setenv('DETDISTILL_CACHE', str(tmp_path / 'cache'))
    handler = functools.partial(_Quiet, directory=os.path.dirname(
        teacher_weights))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = 'http://127.0.0.1:{}/teacher.pdparams'.format(server.server_port)
    save = str(tmp_path / 'out')
    # one epoch barely moves the weights: keep every candidate box, so that
    # some land on objects by chance and the APs are not all zero
    opts = tiny_opts(demo_voc, save, 1) + [
        'BBoxPostProcess.decode.conf_thresh=0.0',
        'BBoxPostProcess.nms.score_threshold=0.0',
        'BBoxPostProcess.nms.keep_top_k=400']
    try:
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained', url,
                      '--eval', '-o', 'use_fine_grained_loss=true'] + opts)
    finally:
        server.shutdown()
    weights = os.path.join(save, 'yolov3_mobilenet_v1_demo', 'model_final')
    student_keys = set(build_model(load_config(STUDENT)).state_dict())
    assert set(paddle.load(weights + '.pdparams')) == student_keys
    res = eval_tool.main(['-c', STUDENT, '-o', 'weights=' + weights] + opts)
    # tools/eval.py reports what the evaluator computes for the saved
    # student, which is the student evaluated at the end of distillation
    expected = evaluate_independently(STUDENT, opts, weights)
    assert expected['mAP']['11point'] > 0
    assert_same_results(res, expected)
    last = _history(save)[-1]
    assert last['kind'] == 'eval' and last['step'] == 8
    assert last['mAP'] == pytest.approx(expected['mAP'], rel=1e-9, abs=1e-15)


def test_wrong_teacher_weights_are_refused(demo_voc, tmp_path):
    distill = script('slim/distillation/distill.py')
    student_ckpt = str(tmp_path / 'student.pdparams')
    paddle.save(build_model(load_config(STUDENT)).state_dict(), student_ckpt)
    with pytest.raises(SystemExit) as e:
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
                      student_ckpt, '-o'] + tiny_opts(demo_voc,
                                                      str(tmp_path)))
    assert e.value.code == 1


def test_num_classes_override_reaches_the_teacher(demo_voc, tmp_path):
    """`-o num_classes=N` builds the teacher for N classes too (one global
    key in PaddleDetection): a teacher trained with that override loads and
    distils; other overrides stay the student's."""
    distill = script('slim/distillation/distill.py')
    from detdistill.config import shared_overrides
    assert shared_overrides(['num_classes=8', 'epoch=3', 'YOLOv3Head.x=1',
                             ' num_classes =8']) == ['num_classes=8',
                                                     ' num_classes =8']
    teacher_ckpt = str(tmp_path / 'teacher8.pdparams')
    paddle.save(build_model(load_config(TEACHER, ['num_classes=8']))
                .state_dict(), teacher_ckpt)
    trainer = distill.main(['-c', STUDENT, '-t', TEACHER,
                            '--teacher_pretrained', teacher_ckpt, '-o'] +
                           tiny_opts(demo_voc, str(tmp_path / 'run'),
                                     num_classes=8))
    saved = paddle.load(teacher_ckpt)
    for model in (trainer.model.teacher.model, trainer.model.student):
        # 3 anchors x (5 + 8 classes) output channels per level
        assert model.state_dict()['yolo_head.yolo_output.0.weight'] \
            .shape[0] == 39
    for k, v in trainer.model.teacher.model.state_dict().items():
        assert np.array_equal(v.numpy(), saved[k].numpy()), k
    assert trainer.state['step'] == 8
    # without the override the same file does not fit the 6-class teacher
    with pytest.raises(SystemExit):
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
                      teacher_ckpt, '-o'] + tiny_opts(
                          demo_voc, str(tmp_path / 'run6')))


# -- divergence --------------------------------------------------------------

def test_non_finite_distill_loss_is_named(demo_voc, tmp_path,
                                          teacher_weights, log_lines):
    """Weight 1e38 times the L2 distance of an untrained teacher's outputs
    (far above 3.4, float32's largest value over 1e38) is inf at step 1: the
    run stops there with exit 1, naming the step and the non-finite terms,
    and saves nothing. (YAML reads 1e38 as a string, 1.0e+38 as a number.)"""
    distill = script('slim/distillation/distill.py')
    save = str(tmp_path / 'run')
    with pytest.raises(SystemExit) as e:
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
                      teacher_weights, '-o'] + tiny_opts(
                          demo_voc, save, 1,
                          distill={'losses.l2.weight': '1.0e+38'}))
    assert e.value.code == 1
    errors = [x for x in log_lines if x.startswith('NonFiniteLossError')]
    assert errors == [
        'NonFiniteLossError: non-finite loss at step 1 (epoch 0): loss=inf, '
        'distill_loss=inf, distill_l2=inf. Nothing was saved for this step; '
        'the last checkpoint in {} is intact. Lower the learning rate or the '
        'distillation weight.'.format(os.path.join(save, RUN))]
    assert not [f for f in os.listdir(os.path.join(save, RUN))
                if f.endswith(('.pdparams', '.pdopt'))]


# -- the log's teacher_loss --------------------------------------------------

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


# -- conflicting or ignored distillation flags -------------------------------

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
