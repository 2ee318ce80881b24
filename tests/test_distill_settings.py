"""The Distill config block (detdistill/distill/settings.py): defaults,
-o overrides, several losses at once, the deprecated flat keys, and a clear
error for each kind of mistake."""
import collections

import paddle
import pytest

from conftest import STUDENT, TEACHER, distiller_and_batch
from detdistill.config import build_model, load_config
from detdistill.distill.distiller import build_distiller
from detdistill.distill.settings import DEFAULTS, distill_settings
from detdistill.errors import ConfigError


def _settings(*opts):
    return distill_settings(load_config(STUDENT, list(opts)))


def _losses(settings):
    return [(e.name, e.type, e.weight, e.pairs, e.options)
            for e in settings.losses]


def test_defaults_are_one_table():
    s = _settings()
    assert _losses(s) == [('l2', 'L2Distill', 'auto', None, {})]
    assert s.losses[0].ratio == 1.0
    assert s.teacher == DEFAULTS['teacher'] == {
        'compile': 'auto', 'cache': 'auto', 'cache_mb': 1024,
        'precision': 'float32', 'emulate_precision': False}
    assert s.unlabeled == DEFAULTS['unlabeled'] == {
        'list': None, 'dir': None, 'batch_size': None, 'weight': 1.0}
    assert s.check == DEFAULTS['check'] == {
        'enabled': True, 'baseline': None, 'margin': 1.0}
    assert not s.has_unlabeled and s.notices == []


def test_command_line_overrides_reach_the_block():
    s = _settings('Distill.losses.kl.temperature=2',
                  'Distill.losses.kl.weight=30',
                  'Distill.teacher.cache=false',
                  'Distill.unlabeled.batch_size=3')
    assert _losses(s) == [('kl', 'KLDistill', 30., None,
                           {'temperature': 2})]
    assert s.teacher['cache'] is False
    assert s.unlabeled['batch_size'] == 3
    # the blog's settings, exactly: PaddleDetection's switch and L2 at a
    # fixed weight
    assert _losses(_settings('use_fine_grained_loss=true')) == [
        ('fine_grained', 'FineGrainedDistill', 1000., None, {})]
    s = _settings('Distill.losses.l2.weight=100')
    assert _losses(s) == [('l2', 'L2Distill', 100., None, {})]
    assert s.losses[0].ratio is None
    s = _settings('Distill.losses.l2.ratio=2.5')
    assert _losses(s) == [('l2', 'L2Distill', 'auto', None, {})]
    assert s.losses[0].ratio == 2.5


@pytest.mark.parametrize('old, new', [
    (['distill_loss=kl', 'temperature=2', 'distill_loss_weight=30'],
     ['Distill.losses.kl.temperature=2', 'Distill.losses.kl.weight=30']),
    (['use_fine_grained_loss=true', 'FineGrainedDistill.obj_target=soft'],
     ['Distill.losses.fine_grained.obj_target=soft']),
    (['teacher_cache=false', 'teacher_compile=true',
      'teacher_precision=bfloat16_emulated', 'teacher_cache_mb=64'],
     ['Distill.teacher.cache=false', 'Distill.teacher.compile=true',
      'Distill.teacher.precision=bfloat16',
      'Distill.teacher.emulate_precision=true',
      'Distill.teacher.cache_mb=64']),
    (['unlabeled_list=u.txt', 'unlabeled_batch_size=2',
      'unlabeled_distill_weight=0.5'],
     ['Distill.unlabeled.list=u.txt', 'Distill.unlabeled.batch_size=2',
      'Distill.unlabeled.weight=0.5']),
])
def test_deprecated_keys_mean_what_the_block_says(old, new):
    a, b = _settings(*old), _settings(*new)
    assert _losses(a) == _losses(b)
    assert a.teacher == b.teacher and a.unlabeled == b.unlabeled
    assert b.notices == []
    keys = [o.split('=')[0].split('.')[0] for o in old]
    assert len(a.notices) == len(keys) - keys.count('use_fine_grained_loss')
    for key in keys:
        if key != 'use_fine_grained_loss':
            assert any(n.startswith(("config key '{}' is deprecated: use "
                                     "Distill.".format(key),
                                     'config block {} is deprecated'.format(
                                         key))) for n in a.notices), key


@pytest.mark.parametrize('opts, message', [
    (['Distill.losse.l2.weight=1'],
     r"unknown key 'Distill.losse' \(did you mean 'Distill.losses'\?\)"),
    (['Distill.teacher.cahce=false'], r"unknown key 'Distill.teacher.cahce' "
     r"\(did you mean 'Distill.teacher.cache'\?\)"),
    (['Distill.unlabeled.weight=-1'],
     'Distill.unlabeled.weight must be a number >= 0, got -1'),
    (['Distill.losses.mine.weight=1'], "Distill.losses.mine: no type, and "
     "'mine' is not a loss"),
    (['Distill.losses.l2.weight=heavy'],
     "Distill.losses.l2.weight must be a number >= 0 or auto, got 'heavy'"),
    (['Distill.losses=[l2]'], 'Distill.losses must map entry names to '
     'losses'),
    (['Distill.losses.l2.weight=10', 'Distill.losses.l2.ratio=2'],
     'Distill.losses.l2.ratio applies to weight: auto only'),
    (['Distill.losses.l2.ratio=0'],
     'Distill.losses.l2.ratio must be a number > 0, got 0'),
    (['Distill.check.margin=much'], r"Distill.check.margin must be a number "
     r"\(mAP points\), got 'much'"),
    (['Distill.losses.l2.weight=1', 'Distill.losses.kl.weight=1',
      'distill_loss_weight=3'], 'distill_loss_weight sets one loss, but '
     'Distill.losses lists l2, kl: set weight in each entry'),
])
def test_mistakes_name_the_key(opts, message):
    with pytest.raises(ConfigError, match=message):
        _settings(*opts)


@pytest.mark.parametrize('opts, message', [
    (['Distill.losses.x.type=NoSuchLoss'],
     "Distill.losses.x: unknown loss type 'NoSuchLoss'"),
    (['Distill.losses.fine_grained.obj_target=sometimes'],
     r"Distill.losses.fine_grained \(FineGrainedDistill\): obj_target must "
     r"be 'hard' or 'soft', got 'sometimes'"),
    (['Distill.losses.l2.pairs=[yolo_head.yolo_output.0]'],
     r'Distill.losses.l2.pairs must list \[student_layer, teacher_layer\] '
     r'pairs'),
    (['Distill.losses.x.type=YOLOv3Loss'],
     r'Distill.losses.x: YOLOv3Loss is not a DistillLoss'),
])
def test_loss_mistakes_name_the_entry(opts, message):
    cfg = load_config(STUDENT, opts)
    with pytest.raises(ConfigError, match=message):
        build_distiller(cfg, build_model(cfg), build_model(load_config(
            TEACHER)))


def test_several_losses_are_summed_each_with_its_weight(
        demo_voc, tmp_path, teacher_weights):
    """l2 on two head levels and fine-grained on the third: each entry's
    weighted components are logged under its name, and distill_loss is
    their sum; the same losses alone give the same terms."""
    both, batch = distiller_and_batch(demo_voc, tmp_path, teacher_weights,
                                      distill={
        'losses.l2.weight': 3.,
        'losses.l2.pairs': '[[yolo_head.yolo_output.0, '
                           'yolo_head.yolo_output.0], [yolo_head.yolo_output'
                           '.1, yolo_head.yolo_output.1]]',
        'losses.fine_grained.weight': 7.,
        'losses.fine_grained.pairs': '[[yolo_head.yolo_output.2, '
                                     'yolo_head.yolo_output.2]]'})
    assert [(loss.name, loss.weight) for loss in both.losses] == [
        ('l2', 3.), ('fine_grained', 7.)]
    both.train()
    paddle.seed(0)
    out = both(batch)
    keys = [k for k in out if k.startswith('distill_')]
    assert keys == ['distill_loss', 'distill_l2_l2', 'distill_fine_grained_reg',
                    'distill_fine_grained_cls', 'distill_fine_grained_obj']
    parts = sum(float(out[k]) for k in keys[1:])
    assert float(out['distill_loss']) == pytest.approx(parts, rel=1e-6)
    # the terms of each entry, computed by the loss alone
    s_out = both.student_outputs(batch)
    t_out = both.teacher.outputs(batch)
    terms = collections.OrderedDict()
    for loss in both.losses:
        for k, v in loss.module.components(loss.pairs, s_out, t_out,
                                           batch).items():
            terms['distill_{}_{}'.format(loss.name, k)] = loss.weight * \
                float(v)
    for k, v in terms.items():
        assert float(out[k]) == pytest.approx(v, rel=1e-5), k
