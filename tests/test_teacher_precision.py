"""The lower-precision teacher (teacher_precision): the emulated rounding
against a hand computation, its start-up check and fallback, the float32
fallback where the hardware lacks the type, and the oneDNN bfloat16
predictor's build path."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import STUDENT, TEACHER, distiller_and_batch, tiny_opts
from detdistill.errors import ConfigError
from detdistill.config import build_model, load_config
from detdistill.distill import teacher_precision
from detdistill.distill.compiled_teacher import (CompiledTeacher,
                                                 max_relative_error)
from detdistill.distill.distiller import build_distiller
from detdistill.distill.teacher_precision import (TOLERANCE, cpu_has_bfloat16,
                                                  emulated_precision)


def _bf16(a):
    """Round-to-nearest-even float32 -> bfloat16 -> float32, in numpy."""
    bits = np.ascontiguousarray(a, 'float32').view('uint32').astype('uint64')
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype('uint32').view('float32')


def test_emulated_bfloat16_rounds_a_convolutions_input_weight_and_output():
    paddle.seed(3)
    conv = paddle.nn.Conv2D(3, 4, 3, bias_attr=False)
    x = np.random.RandomState(0).randn(2, 3, 6, 6).astype('float32')
    w = conv.weight.numpy().copy()
    with emulated_precision(conv, 'bfloat16'):
        got = conv(paddle.to_tensor(x)).numpy()
    expected = _bf16(F.conv2d(paddle.to_tensor(_bf16(x)),
                              paddle.to_tensor(_bf16(w))).numpy())
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, F.conv2d(paddle.to_tensor(x),
                                            paddle.to_tensor(w)).numpy())
    # Outside the block: the float32 weights and forward, bit for bit.
    np.testing.assert_array_equal(conv.weight.numpy(), w)
    np.testing.assert_array_equal(
        conv(paddle.to_tensor(x)).numpy(),
        F.conv2d(paddle.to_tensor(x), paddle.to_tensor(w)).numpy())


def test_emulated_teacher_is_checked_at_start_and_keeps_its_weights(
        demo_voc, tmp_path, teacher_weights, log_lines):
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights, distill={
            'teacher.precision': 'bfloat16', 'teacher.emulate_precision': True,
            'teacher.compile': 'auto', 'teacher.cache': False})
    assert d.teacher.compiled is None  # the emulation wraps the eager forward
    before = {k: v.numpy().copy() for k, v in d.teacher.model.state_dict().items()}
    eager = d.teacher.eager(batch)
    first = d.teacher.forward(batch)
    lp = d.teacher.low_precision
    assert lp.failed is None
    assert 0 < lp.max_relative_error <= TOLERANCE['bfloat16']
    assert max_relative_error(first, eager) == lp.max_relative_error
    again = d.teacher.forward(batch)
    for name in eager:
        assert first[name].dtype == paddle.float32
        np.testing.assert_array_equal(again[name].numpy(),
                                      first[name].numpy())
    for k, v in d.teacher.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert [x for x in log_lines if x.startswith('teacher precision')] == [
        'teacher precision bfloat16: the teacher runs eagerly, not compiled']
    assert len([x for x in log_lines if x.startswith(
        'Teacher forward in bfloat16, emulated in float32')]) == 1


def test_drift_beyond_the_tolerance_keeps_the_teacher_float32(
        demo_voc, tmp_path, teacher_weights, log_lines, monkeypatch):
    monkeypatch.setitem(teacher_precision.TOLERANCE, 'float16', 1e-9)
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights, distill={
            'teacher.precision': 'float16', 'teacher.emulate_precision': True,
            'teacher.cache': False})
    eager = d.teacher.eager(batch)
    for _ in range(2):
        out = d.teacher.forward(batch)
        for name in eager:
            np.testing.assert_array_equal(out[name].numpy(),
                                          eager[name].numpy())
    assert d.teacher.low_precision.failed.endswith('(tolerance 1e-09)')
    stays = [x for x in log_lines if x.startswith('Teacher stays float32')]
    assert len(stays) == 1 and stays[0].startswith(
        'Teacher stays float32: float16, emulated in float32')


def test_real_low_precision_falls_back_to_float32_without_the_hardware(
        demo_voc, tmp_path, teacher_weights, log_lines):
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights, distill={
            'teacher.precision': 'float16', 'teacher.cache': False})
    assert d.teacher.low_precision is None and d.teacher.compiled is None
    assert 'teacher precision float16: the teacher runs in float32 (float16 ' \
        'runs on GPUs only)' in log_lines
    if not cpu_has_bfloat16():
        d, _ = distiller_and_batch(
            demo_voc, tmp_path, teacher_weights, distill={
                'teacher.precision': 'bfloat16', 'teacher.compile': True})
        assert d.teacher.low_precision is None
        assert not d.teacher.compiled.bfloat16
        assert any(x.startswith('teacher precision bfloat16: the teacher '
                                'runs in float32 (this CPU has no bfloat16')
                   for x in log_lines)


def test_an_eager_precision_and_a_forced_compile_are_an_error(
        demo_voc, tmp_path, teacher_weights):
    """Emulated rounding runs the teacher eagerly: with compile true that
    is a contradiction, said so, not a silent switch."""
    with pytest.raises(ConfigError, match=r'Distill.teacher.precision '
                       r'bfloat16 \(emulated\) runs the teacher eagerly, but '
                       r'Distill.teacher.compile is true: set it to auto or '
                       r'false'):
        distiller_and_batch(demo_voc, tmp_path, teacher_weights, distill={
            'teacher.precision': 'bfloat16', 'teacher.emulate_precision': True,
            'teacher.compile': True})


def test_cpu_bfloat16_flag_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('flags\t\t: fpu sse2 avx2 avx512f\n')
    assert cpu_has_bfloat16(str(info)) is False
    info.write_text('flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n')
    assert cpu_has_bfloat16(str(info)) is True
    assert cpu_has_bfloat16(str(tmp_path / 'missing')) is False


def test_onednn_bfloat16_predictor_builds_and_is_checked(
        demo_voc, tmp_path, teacher_weights, log_lines):
    """The predictor a bfloat16 CPU gets: on a CPU without bfloat16 Paddle
    runs it in float32, so here this checks the build path and the check."""
    d, batch = distiller_and_batch(
        demo_voc, tmp_path, teacher_weights, distill={'teacher.cache': False})
    c = CompiledTeacher(d.teacher.model, [t for _, t in d.losses[0].pairs],
                        d.teacher.eager, bfloat16=True,
                        tolerance=TOLERANCE['bfloat16'])
    out = c(batch)
    assert c.active, c.failed
    assert c.max_relative_error <= TOLERANCE['bfloat16']
    assert max_relative_error(out, d.teacher.eager(batch)) == \
        c.max_relative_error
    assert len([x for x in log_lines if x.startswith(
        'Teacher forward compiled (Paddle Inference, oneDNN, bfloat16')]) == 1


def test_teacher_precision_must_be_a_known_type(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), distill={
        'teacher.precision': 'fp16'}))
    with pytest.raises(ConfigError, match="Distill.teacher.precision must be "
                       "one of float32, float16, bfloat16, got 'fp16'"):
        build_distiller(cfg, build_model(cfg),
                        build_model(load_config(TEACHER)))
