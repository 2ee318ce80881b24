"""The teacher-output cache: exact against recomputation (up to the stated
float16 rounding), independent of which images share a batch, on only when
the augmentation is deterministic up to a flip, and invisible to -r."""
import os

import numpy as np
import paddle
import pytest

from conftest import ROOT, assert_resume_is_exact, tiny_opts
from detdistill.errors import ConfigError
from detdistill.config import build_model, load_config
from detdistill.distill.distiller import build_distiller
from detdistill.distill.settings import distill_settings
from detdistill.distill.teacher_cache import (TeacherCache, _rows,
                                              build_teacher_cache,
                                              cache_blocker)
from detdistill.engine import Trainer

STUDENT = os.path.join(ROOT, 'configs/converged/yolov3_mobilenet_v1_converged.yml')
TEACHER = os.path.join(ROOT, 'configs/converged/yolov3_r34_converged.yml')
DEMO_STUDENT = os.path.join(ROOT, 'configs/demo/yolov3_mobilenet_v1_demo.yml')


def _as_f16(x):
    return x.numpy().astype(np.float16).astype(np.float32)


def test_cache_is_exact_and_batch_independent(demo_voc, tmp_path,
                                              teacher_weights):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)) +
                      ['TrainReader.batch_size=8'])
    teacher = build_model(load_config(TEACHER))
    teacher.set_state_dict(paddle.load(teacher_weights))
    d = build_distiller(cfg, build_model(cfg), teacher)
    assert isinstance(d.teacher.cache, TeacherCache)
    batch = next(iter(Trainer(cfg, 'train', model=d, detector=d.student).loader))
    eager = d.teacher.forward(batch)
    first = d.teacher.outputs(batch)
    assert (d.teacher.cache.hits, d.teacher.cache.misses) == (0, 8)
    assert sorted(first) == sorted(eager) == sorted(t for _, t in d.losses[0].pairs)
    for name in eager:  # a miss is the eager output rounded to float16
        np.testing.assert_array_equal(first[name].numpy(),
                                      _as_f16(eager[name]))
    again = d.teacher.outputs(batch)
    assert (d.teacher.cache.hits, d.teacher.cache.misses) == (8, 8)
    for name in eager:
        np.testing.assert_array_equal(again[name].numpy(),
                                      first[name].numpy())
    # Rows 0-2 computed alone, then the batch: 3 hits, 5 computed in a
    # batch of 5, and every row equal to the batch-of-8 result.
    d.teacher.cache = TeacherCache()
    d.teacher.outputs(_rows(batch, [0, 1, 2], 8))
    mixed = d.teacher.outputs(batch)
    assert (d.teacher.cache.hits, d.teacher.cache.misses) == (3, 8)
    for name in eager:
        np.testing.assert_array_equal(mixed[name].numpy(),
                                      first[name].numpy())
    assert d.teacher.cache.summary().startswith('teacher cache: 8 images')


def test_cache_turns_itself_off_for_random_augmentation():
    demo = load_config(DEMO_STUDENT)
    conv = load_config(STUDENT)
    assert cache_blocker(conv['TrainReader']) is None
    assert cache_blocker(demo['TrainReader']).startswith('BatchRandomResize')
    reader = {'sample_transforms': [{'Decode': {}}, {'RandomExpand': {
        'fill_value': [0, 0, 0]}}, {'RandomFlip': {}}]}
    assert cache_blocker(reader) == 'RandomExpand'
    assert build_teacher_cache('auto', 64, demo['TrainReader']) is None
    assert build_teacher_cache('auto', 64, conv['TrainReader']).budget == \
        64 * 2 ** 20
    forced = build_teacher_cache(True, 64, demo['TrainReader'])
    assert isinstance(forced, TeacherCache)
    assert build_teacher_cache(False, 64, conv['TrainReader']) is None
    for bad, msg in (({'cache': 'yes'}, 'Distill.teacher.cache must be auto, '
                      "true or false, got 'yes'"),
                     ({'cache_mb': 0}, 'Distill.teacher.cache_mb must be a '
                      'number > 0, got 0')):
        with pytest.raises(ConfigError, match=msg):
            distill_settings({'Distill': {'teacher': bad}})


def test_cache_budget_stops_storing_but_keeps_rounding():
    cache = TeacherCache(budget_mb=6e-4)  # 629 bytes: one 512-byte entry

    def forward(inputs):
        return {'out': inputs['image'] * 2.}
    img = paddle.to_tensor(np.random.RandomState(0).rand(3, 1, 16, 16)
                           .astype('float32') * 10)
    out = cache.outputs({'image': img}, forward)
    assert len(cache.entries) == 1 and cache.full_logged
    np.testing.assert_array_equal(out['out'].numpy(), _as_f16(img * 2.))
    out2 = cache.outputs({'image': img}, forward)
    assert (cache.hits, cache.misses) == (1, 5)
    np.testing.assert_array_equal(out2['out'].numpy(), out['out'].numpy())


def test_resume_with_the_cache_gives_the_uninterrupted_weights(
        demo_voc, tmp_path, teacher_weights):
    """The uninterrupted run serves epochs 2-3 partly from its cache; the
    resumed run starts with an empty one. Same weights, bit for bit."""
    assert_resume_is_exact(STUDENT, TEACHER, teacher_weights, demo_voc,
                           tmp_path, 3, distill_loss_weight=0.01,
                           teacher_cache='true')
