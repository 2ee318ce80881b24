"""The teacher's paired forward as a Paddle Inference predictor with oneDNN.

The teacher is frozen and in eval mode, so its forward is pure inference:
backbone, neck and the YOLO head's output convolutions, stopping there (no
decoding, no NMS). Eager Paddle runs its CPU convolutions without oneDNN;
Paddle Inference with oneDNN ran this forward in about a quarter of the
eager time on the project's CPU (results/TEACHER_SPEED.md: 0.24x and
0.27x), which `paddle.jit.to_static` alone did not (same kernels).

Two things in Paddle 3.3.1's oneDNN path fail on a YOLOv3 and are worked
around: `conv_activation_onednn_fuse_pass` segfaults on leaky_relu's float64
`negative_slope` (the pass is deleted, onednn_predictor.py), and the executor
cannot read nearest_interp's float64 `scale` array ("ConvertPirAttribute2
RuntimeAttribute not support ArrayAttribute<DoubleAttribute>"): while the
program is traced, nearest upsampling by an integer factor is written as
tile + reshape, which gives the same values.

Everything happens at the first call, on the first batch, so weights loaded
before training starts are the ones compiled: the program is saved, built
and run once in a child process (a crash in Paddle's passes kills only the
child), built here, and its outputs compared with the eager teacher's, every
paired output within TOLERANCE of the eager output's largest magnitude
(oneDNN sums in another order). Any failure logs one line and the eager
forward is used from then on.
"""
import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ..logger import get_logger
from . import onednn_predictor

__all__ = ['CompiledTeacher', 'TOLERANCE', 'max_relative_error',
           'exact_nearest_upsampling']

logger = get_logger()

# Relative to max |eager output| of each paired output.
TOLERANCE = 1e-4
_CHILD_TIMEOUT_S = 900


class _PairedForward(nn.Layer):
    """image -> [output of each paired layer], through a ppdet YOLOv3's
    backbone, neck and head output convolutions only."""

    def __init__(self, teacher, names):
        super().__init__()
        self.teacher = teacher
        self.names = list(names)

    def forward(self, image):
        t = self.teacher
        layers = dict(t.named_sublayers())
        seen = {}
        handles = [layers[n].register_forward_post_hook(
            lambda layer, inputs, out, n=n: seen.__setitem__(n, out))
            for n in self.names]
        try:
            feats = t.neck(t.backbone({'image': image}))
            for conv, feat in zip(t.yolo_head.yolo_outputs, feats):
                conv(feat)
        finally:
            for h in handles:
                h.remove()
        return [seen[n] for n in self.names]


def supports(teacher, names):
    """None if the paired forward can be compiled, else why not."""
    if 'gpu' in str(paddle.get_device()):
        return 'compiled on CPU only (oneDNN); not measured on a GPU'
    for part in ('backbone', 'neck', 'yolo_head'):
        if not isinstance(getattr(teacher, part, None), nn.Layer):
            return 'the teacher has no {} (not a ppdet YOLOv3)'.format(part)
    if getattr(teacher.yolo_head, 'data_format', 'NCHW') != 'NCHW':
        return 'the head is not NCHW'
    if not all(n.startswith(('backbone.', 'neck.', 'yolo_head.yolo_output.'))
               for n in names):
        return 'a paired layer lies outside backbone, neck and head outputs'
    return None


@contextlib.contextmanager
def exact_nearest_upsampling():
    """Within the block, F.interpolate(x, scale_factor=k, mode='nearest')
    for an integer k on NCHW is tile + reshape: out[i] = in[i // k], the
    values nearest_interp gives (align_corners=False), without its float64
    `scale` attribute. Every other call goes to Paddle's interpolate."""
    original = F.interpolate

    def interpolate(x, size=None, scale_factor=None, mode='nearest',
                    align_corners=False, align_mode=0, data_format='NCHW',
                    name=None):
        k = scale_factor
        if (size is None and mode == 'nearest' and not align_corners and
                data_format == 'NCHW' and len(x.shape) == 4 and
                isinstance(k, (int, float)) and float(k).is_integer() and
                k >= 1):
            k = int(k)
            s = paddle.shape(x)
            y = paddle.tile(x.unsqueeze([3, 5]), [1, 1, 1, k, 1, k])
            return y.reshape([s[0], x.shape[1], s[2] * k, s[3] * k])
        return original(x, size, scale_factor, mode, align_corners,
                        align_mode, data_format, name)
    F.interpolate = interpolate
    try:
        yield
    finally:
        F.interpolate = original


def _save(teacher, names, prefix):
    spec = [paddle.static.InputSpec([None, 3, None, None], 'float32',
                                    'image')]
    with exact_nearest_upsampling():
        paddle.jit.save(_PairedForward(teacher, names), prefix,
                        input_spec=spec)


def _runs_in_child(prefix, shape, threads, bfloat16=False):
    """None if building and running the predictor works in a child
    process, else what went wrong there."""
    try:
        p = subprocess.run(
            [sys.executable, onednn_predictor.__file__, prefix,
             ','.join(map(str, shape)), str(threads)] +
            (['bfloat16'] if bfloat16 else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 'no answer in {} s'.format(_CHILD_TIMEOUT_S)
    if p.returncode == 0:
        return None
    last = [line for line in p.stderr.splitlines() if line.strip()][-1:]
    return 'exit {}: {}'.format(p.returncode, (last or ['?'])[0][:200])


class CompiledTeacher:
    """`compiled(inputs)` -> {name: tensor}, like the eager paired forward
    `eager(inputs)`; checked against it on the first call. `bfloat16`: the
    predictor computes in bfloat16 (teacher_precision.py; pass that type's
    tolerance)."""

    def __init__(self, teacher, names, eager, threads=None,
                 tolerance=TOLERANCE, bfloat16=False):
        self.teacher = teacher
        self.bfloat16 = bfloat16
        self.names = list(names)
        self.eager = eager
        self.threads = int(threads or paddle.get_flags(
            ['FLAGS_paddle_num_threads'])['FLAGS_paddle_num_threads'])
        self.tolerance = tolerance
        self.predictor = None
        self.max_relative_error = None
        self.failed = supports(teacher, self.names)
        if self.failed:
            logger.info('Teacher forward stays eager: {}'.format(self.failed))

    @property
    def active(self):
        return self.predictor is not None

    def __call__(self, inputs):
        if self.failed:
            return self.eager(inputs)
        if self.predictor is None:
            return self._first_call(inputs)
        outs = onednn_predictor.run(self.predictor, inputs['image'].numpy())
        return {n: paddle.to_tensor(o) for n, o in zip(self.names, outs)}

    def _fail(self, why):
        self.failed = why
        self.predictor = None
        logger.info('Teacher forward stays eager: {}'.format(why))

    def _first_call(self, inputs):
        ref = self.eager(inputs)
        image = inputs['image'].numpy()
        with tempfile.TemporaryDirectory(prefix='detdistill_teacher_') as d:
            prefix = os.path.join(d, 'teacher')
            try:
                _save(self.teacher, self.names, prefix)
            except Exception as e:  # noqa: BLE001 - logged, then eager
                self._fail('saving the program failed ({})'.format(
                    repr(e)[:200]))
                return ref
            crash = _runs_in_child(prefix, image.shape, self.threads,
                                   self.bfloat16)
            if crash:
                self._fail('the oneDNN predictor failed in a test process '
                           '({})'.format(crash))
                return ref
            try:
                self.predictor = onednn_predictor.build(
                    prefix, self.threads, self.bfloat16)
                outs = onednn_predictor.run(self.predictor, image)
            except Exception as e:  # noqa: BLE001
                self._fail('the oneDNN predictor failed ({})'.format(
                    repr(e)[:200]))
                return ref
        out = {n: paddle.to_tensor(o) for n, o in zip(self.names, outs)}
        worst = max_relative_error(out, ref)
        self.max_relative_error = worst
        if not worst <= self.tolerance:
            self._fail('its outputs differ from the eager ones by {:.2e} of '
                       'their largest value (tolerance {:.0e})'.format(
                           worst, self.tolerance))
            return ref
        logger.info('Teacher forward compiled (Paddle Inference, oneDNN{}, {} '
                    'thread{}): outputs within {:.1e} of the eager ones '
                    '(tolerance {:.0e})'.format(
                        ', bfloat16' if self.bfloat16 else '', self.threads,
                        's' if self.threads > 1 else '', worst,
                        self.tolerance))
        # The compiled outputs from the first step on: a resumed run, which
        # checks again at its first step, then sees what the uninterrupted
        # run saw.
        return out


def _numpy(x):
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


def max_relative_error(out, ref):
    """max over paired outputs of max|out - ref| / max|ref| (inf if a shape
    differs or a value is not finite)."""
    worst = 0.
    for name, r in ref.items():
        r, o = _numpy(r), _numpy(out[name])
        if o.shape != r.shape:
            return float('inf')
        scale = max(float(np.abs(r).max()), 1e-12)
        err = float(np.abs(o - r).max()) / scale
        if not np.isfinite(err):  # max() would drop a NaN
            return float('inf')
        worst = max(worst, err)
    return worst
