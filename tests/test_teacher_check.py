"""The teacher check at the start of distill.py (distill/teacher_check.py):
the teacher's mAP on the student's eval set, cached; the comparison with
the student's baseline and its warning; and the `auto` weight that keeps
the distillation term at the detection loss's size."""
import json
import os

import paddle
import pytest

from conftest import (STUDENT, TEACHER, assert_resume_is_exact, script,
                      distiller_and_batch, evaluate_independently, tiny_opts)
from detdistill.errors import ConfigError

RUN = 'yolov3_mobilenet_v1_demo'


def _tool(name):
    return script({'train': 'tools/train.py',
                   'distill': 'slim/distillation/distill.py'}[name])


@pytest.fixture(scope='module')
def baseline_run(demo_voc, tmp_path_factory):
    """A finished tools/train.py --eval run of the student (2 epochs)."""
    save = str(tmp_path_factory.mktemp('baseline'))
    _tool('train').main(['-c', STUDENT, '--eval', '-o'] +
                        tiny_opts(demo_voc, save, 2))
    return os.path.join(save, RUN)


def _distill(demo_voc, save, teacher_weights, *args):
    return _tool('distill').main(
        ['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
         teacher_weights] + list(args) + ['-o'] + tiny_opts(demo_voc, save, 1))


def test_the_teacher_is_evaluated_once_and_compared_with_the_baseline(
        demo_voc, tmp_path, teacher_weights, baseline_run, log_lines):
    _distill(demo_voc, str(tmp_path / 'a'), teacher_weights, '--baseline',
             baseline_run)
    with open(os.path.join(str(tmp_path / 'a'), RUN,
                           'teacher_check.json')) as f:
        check = json.load(f)
    # the teacher's mAP, as an evaluation of its own computes it
    teacher_cfg_opts = tiny_opts(demo_voc, str(tmp_path))
    want = evaluate_independently(TEACHER, teacher_cfg_opts,
                                  teacher_weights[:-len('.pdparams')])
    assert check['teacher_mAP'] == pytest.approx(
        100 * want['mAP']['11point'], rel=1e-9, abs=1e-12)
    # the baseline: the last evaluation of the tools/train.py run
    with open(os.path.join(baseline_run, 'history.jsonl')) as f:
        evals = [json.loads(line) for line in f if '"eval"' in line]
    assert check['baseline_mAP'] == 100 * evals[-1]['mAP']['11point']
    assert check['margin'] == check['teacher_mAP'] - check['baseline_mAP']
    # a random teacher is not better than a trained student: a warning
    assert check['clearly_better'] is False
    warned = [x for x in log_lines if 'is not clearly better than the '
              'student trained alone' in x]
    assert len(warned) == 1
    assert 'teacher mAP {:.2f}, student baseline {:.2f}'.format(
        check['teacher_mAP'], check['baseline_mAP']) in warned[0]
    # a second run takes the teacher's mAP from the cache
    del log_lines[:]
    _distill(demo_voc, str(tmp_path / 'b'), teacher_weights)
    assert not [x for x in log_lines if x.startswith(
        'Teacher check: evaluating')]
    cached = [x for x in log_lines if '(cached in ' in x]
    assert len(cached) == 1 and 'mAP {:.2f}'.format(
        check['teacher_mAP']) in cached[0]


def test_a_baseline_given_as_weights_is_evaluated(
        demo_voc, tmp_path, teacher_weights, baseline_run):
    from detdistill.config import load_config
    from detdistill.distill.teacher_check import baseline_map
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)))
    value, source = baseline_map(cfg, os.path.join(baseline_run,
                                                   'model_final'))
    want = evaluate_independently(STUDENT, tiny_opts(demo_voc, str(
        tmp_path)), os.path.join(baseline_run, 'model_final'))
    assert value == pytest.approx(100 * want['mAP']['11point'], rel=1e-9,
                                  abs=1e-12)
    assert source == os.path.join(baseline_run, 'model_final.pdparams')


@pytest.mark.parametrize('make, message', [
    (lambda d: d, 'has no evaluation in'),
    (lambda d: os.path.join(d, 'missing'), 'is neither a tools/train.py '
     'output folder nor weights'),
])
def test_a_baseline_that_cannot_be_used_is_named(demo_voc, tmp_path, make,
                                                 message):
    from detdistill.config import load_config
    from detdistill.distill.teacher_check import baseline_map
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)))
    where = make(str(tmp_path))
    with pytest.raises(ConfigError, match=message) as e:
        baseline_map(cfg, where)
    assert where in str(e.value)


def test_the_check_can_be_turned_off(demo_voc, tmp_path, teacher_weights,
                                     log_lines):
    _tool('distill').main(['-c', STUDENT, '-t', TEACHER,
                           '--teacher_pretrained', teacher_weights, '-o'] +
                          tiny_opts(demo_voc, str(tmp_path), 1) +
                          ['Distill.check.enabled=false'])
    assert not [x for x in log_lines if x.startswith('Teacher check')]
    assert not os.path.exists(os.path.join(str(tmp_path), RUN,
                                           'teacher_check.json'))


# -- the auto weight ----------------------------------------------------------

@pytest.mark.parametrize('ratio', [1.0, 0.25])
def test_auto_weight_keeps_the_term_at_ratio_times_the_detection_loss(
        demo_voc, tmp_path, teacher_weights, ratio):
    d, batch = distiller_and_batch(demo_voc, tmp_path, teacher_weights,
                                   distill={'losses.l2.weight': 'auto',
                                            'losses.l2.ratio': ratio})
    d.train()
    out = d(batch)
    det, distill = float(out['det_loss']), float(out['distill_loss'])
    assert distill == pytest.approx(ratio * det, rel=1e-6)
    raw = float(out['distill_l2']) / float(out['distill_weight'])
    assert float(out['distill_weight']) == pytest.approx(ratio * det / raw,
                                                         rel=1e-6)
    # the weight carries no gradient: d(distill)/d(student) is
    # weight x d(raw)/d(student)
    s_out = d.student_outputs(batch)
    t_out = d.teacher.outputs(batch)
    loss = d.losses[0]
    parts = loss.module.components(loss.pairs, s_out, t_out, batch)
    raw_t = paddle.add_n(list(parts.values()))
    assert float(raw_t) == pytest.approx(raw, rel=1e-6)


def test_auto_weight_resumes_exactly(demo_voc, tmp_path, teacher_weights):
    """The weight is a function of the step's own losses: no state to
    save, and a resumed run ends with the uninterrupted run's weights."""
    assert_resume_is_exact(STUDENT, TEACHER, teacher_weights, demo_voc,
                           tmp_path, 2, distill={'losses.l2.weight': 'auto',
                                                 'check.enabled': False})
