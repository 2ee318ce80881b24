"""The compiled teacher (Paddle Inference + oneDNN): its outputs against the
eager teacher's within the stated tolerance, the fallback to eager when the
check or the build fails, and the rewrite that makes it build."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import (STUDENT, TEACHER, assert_resume_is_exact,
                      distiller_and_batch, tiny_opts)
from detdistill.errors import ConfigError
from detdistill.config import build_model, load_config
from detdistill.distill.compiled_teacher import (TOLERANCE, CompiledTeacher,
                                                 _runs_in_child,
                                                 exact_nearest_upsampling,
                                                 max_relative_error, supports)
from detdistill.distill import onednn_predictor
from detdistill.distill.distiller import build_distiller
from detdistill.distill.teacher_cache import _rows


def test_nearest_upsampling_rewrite_gives_interpolates_values():
    x = paddle.to_tensor(np.random.RandomState(0).rand(2, 3, 5, 7)
                         .astype('float32'))
    expected = {k: F.interpolate(x, scale_factor=k).numpy() for k in (2, 3)}
    bilinear = F.interpolate(x, scale_factor=2, mode='bilinear').numpy()
    original = F.interpolate
    with exact_nearest_upsampling():
        assert F.interpolate is not original
        for k in (2, 3):
            got = F.interpolate(x, scale_factor=float(k)).numpy()
            assert got.shape == (2, 3, 5 * k, 7 * k)
            np.testing.assert_array_equal(got, expected[k])
        # Anything else goes to Paddle's own interpolate.
        np.testing.assert_array_equal(
            F.interpolate(x, scale_factor=2, mode='bilinear').numpy(),
            bilinear)
    assert F.interpolate is original


def test_compiled_teacher_matches_eager_within_tolerance(
        demo_voc, tmp_path, teacher_weights, log_lines):
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights,
        distill={'teacher.compile': True, 'teacher.cache': False})
    eager = d.teacher.eager(batch)
    first = d.teacher.forward(batch)  # checked, then compiled from here on
    assert d.teacher.compiled.active and not d.teacher.compiled.failed
    assert 0 <= d.teacher.compiled.max_relative_error <= TOLERANCE
    assert max_relative_error(first, eager) == d.teacher.compiled.max_relative_error
    assert len([x for x in log_lines if x.startswith(
        'Teacher forward compiled (Paddle Inference, oneDNN')]) == 1
    # Every call is the predictor's output, within the tolerance.
    direct = onednn_predictor.run(d.teacher.compiled.predictor,
                                  batch['image'].numpy())
    second = d.teacher.forward(batch)
    assert sorted(second) == sorted(first) == sorted(eager)
    for name, out in zip(d.teacher.compiled.names, direct):
        np.testing.assert_array_equal(first[name].numpy(), out)
        np.testing.assert_array_equal(second[name].numpy(), out)
    # Another batch size (a cache's partial batch) reuses the program.
    part = _rows(batch, [0, 2], 4)
    assert max_relative_error(d.teacher.forward(part),
                              d.teacher.eager(part)) <= TOLERANCE
    # A distillation step with it gives the eager step's loss.
    d.train()
    compiled_loss = float(d(batch)['distill_loss'])
    d.teacher.compiled = None
    eager_loss = float(d(batch)['distill_loss'])
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)


def test_compiled_teacher_falls_back_to_eager(demo_voc, tmp_path,
                                              teacher_weights, log_lines):
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights)
    assert d.teacher.compiled is None
    names = [t for _, t in d.losses[0].pairs]
    # A tolerance no output can meet: the real check fails.
    c = CompiledTeacher(d.teacher.model, names, d.teacher.eager,
                        tolerance=-1.)
    eager = d.teacher.eager(batch)
    for _ in range(2):
        out = c(batch)
        for name in names:
            np.testing.assert_array_equal(out[name].numpy(),
                                          eager[name].numpy())
    assert not c.active and c.failed.startswith('its outputs differ')
    stays = [x for x in log_lines if x.startswith('Teacher forward stays')]
    assert len(stays) == 1 and 'tolerance -1e+00' in stays[0]
    # A predictor that cannot be built: the child process says why.
    why = _runs_in_child(str(tmp_path / 'missing'), (1, 3, 32, 32), 1)
    assert why.startswith('exit 1: ')
    # Layers the compiled forward does not reach stay eager.
    assert supports(d.teacher.model, ['yolo_head.loss']) == \
        'a paired layer lies outside backbone, neck and head outputs'
    assert supports(d.teacher.model, names) is None


def test_resume_with_the_compiled_teacher_gives_the_uninterrupted_weights(
        demo_voc, tmp_path, teacher_weights, log_lines):
    """Both runs compile the teacher at their first step; the resumed run's
    weights equal the uninterrupted run's, bit for bit."""
    assert_resume_is_exact(STUDENT, TEACHER, teacher_weights, demo_voc,
                           tmp_path, 2, distill={'losses.l2.weight': 0.01,
                                                 'teacher.compile': True})
    assert len([x for x in log_lines if x.startswith(
        'Teacher forward compiled')]) == 3


def test_teacher_compile_must_be_auto_or_a_boolean(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), distill={
        'teacher.compile': 2}))
    with pytest.raises(ConfigError, match='Distill.teacher.compile must be '
                       'auto, true or false, got 2'):
        build_distiller(cfg, build_model(cfg),
                        build_model(load_config(TEACHER)))
