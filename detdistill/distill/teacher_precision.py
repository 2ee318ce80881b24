"""The teacher's forward in float16 or bfloat16 (Distill.teacher.precision,
.emulate_precision).

  float32            the default
  float16 | bfloat16 on a GPU that has the type: the eager forward under
                     `paddle.amp.auto_cast` (O1: convolutions in the low
                     type); bfloat16 on a CPU with bfloat16 instructions
                     (avx512_bf16 / amx_bf16): the compiled teacher's oneDNN
                     predictor in bfloat16 (dygraph auto_cast left a
                     convolution in float32 on the CPU it was tried on).
                     Elsewhere: float32 and one log line.
  emulate_precision  the numerics without the speed, on any machine: every
                     Conv2D's input, weight and output rounded to the low
                     type and back (what O1 rounds; sums stay float32, as
                     in the bfloat16 and tensor-core kernels). This is how
                     the drift and the student's mAP were measured on a CPU
                     that has no bfloat16 (README, "Lower-precision teacher").

At the first call the low-precision outputs are compared with the float32
ones on the same batch: beyond TOLERANCE of each output's largest value, the
teacher stays float32 from then on, with one log line. Outputs are float32
either way, so the losses and the teacher cache see one type.
"""
import contextlib

import paddle
from paddle import nn

from ..errors import ConfigError
from ..logger import get_logger
from .compiled_teacher import max_relative_error

__all__ = ['TOLERANCE', 'cpu_has_bfloat16',
           'choose', 'emulated_precision', 'LowPrecisionTeacher']

logger = get_logger()

# max |low - float32| / max |float32| per paired output. Measured with the
# emulation on the converged teacher (README): bfloat16 ~1e-2, float16 ~1e-3;
# the tolerance is a few times that, so a broken kernel, not rounding, trips it.
TOLERANCE = {'float16': 1e-2, 'bfloat16': 5e-2}


def cpu_has_bfloat16(cpuinfo='/proc/cpuinfo'):
    try:
        with open(cpuinfo) as f:
            flags = f.read().split()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def choose(precision, emulate, compile_teacher):
    """How the teacher computes in `precision` (Distill.teacher.precision,
    .emulate_precision) on this machine, and whether it is compiled:
    (how, compile_teacher) with how None (float32), 'amp' (GPU auto_cast),
    'emulated' or 'onednn' (bfloat16 in the compiled teacher's predictor).
    The amp and emulated forwards are eager ones: with Distill.teacher
    .compile auto the teacher then runs eagerly (logged), with true it is
    an error."""
    if precision == 'float32':
        how = None
    elif emulate:
        how = 'emulated'
    else:
        how, why = _support(precision, compile_teacher is not False)
        if how is None:
            logger.info('teacher precision {}: the teacher runs in float32 '
                        '({})'.format(precision, why))
    if how in ('amp', 'emulated'):
        if compile_teacher is True:
            raise ConfigError(
                'Distill.teacher.precision {}{} runs the teacher eagerly, '
                'but Distill.teacher.compile is true: set it to auto or '
                'false'.format(precision, ' (emulated)' if emulate else ''))
        if compile_teacher == 'auto':
            logger.info('teacher precision {}: the teacher runs eagerly, not '
                        'compiled'.format(precision))
        compile_teacher = False
    return how, compile_teacher is not False


def _support(dtype, compiled):
    if 'gpu' in str(paddle.get_device()):
        ok = (paddle.amp.is_float16_supported() if dtype == 'float16'
              else paddle.amp.is_bfloat16_supported())
        return ('amp', None) if ok else (None, 'this GPU has no ' + dtype)
    if dtype == 'float16':
        return None, 'float16 runs on GPUs only'
    if not cpu_has_bfloat16():
        return None, 'this CPU has no bfloat16 instructions (avx512_bf16, ' \
            'amx_bf16)'
    if not compiled:
        return None, 'bfloat16 on a CPU needs the compiled teacher ' \
            '(Distill.teacher.compile auto or true)'
    return 'onednn', None


def _rounded(x, dtype):
    return x.astype(dtype).astype(x.dtype)


@contextlib.contextmanager
def emulated_precision(model, dtype):
    """Within the block, every Conv2D of `model` computes on `dtype`-rounded
    inputs and weights and returns a `dtype`-rounded output, in float32.
    The weights are restored on exit."""
    convs = [m for m in model.sublayers(include_self=True)
             if isinstance(m, nn.Conv2D)]
    saved = [c.weight.clone() for c in convs]
    handles = []
    try:
        for c in convs:
            c.weight.set_value(_rounded(c.weight, dtype))
            handles.append(c.register_forward_pre_hook(
                lambda layer, inputs: tuple(_rounded(i, dtype)
                                            for i in inputs)))
            handles.append(c.register_forward_post_hook(
                lambda layer, inputs, out: _rounded(out, dtype)))
        yield
    finally:
        for h in handles:
            h.remove()
        for c, w in zip(convs, saved):
            c.weight.set_value(w)


class LowPrecisionTeacher:
    """`forward(inputs)` -> {name: float32 tensor}: `eager(inputs)` run in
    `precision` ('amp' or emulated; the oneDNN bfloat16 path lives in the
    compiled teacher), checked against float32 at the first call."""

    def __init__(self, teacher, dtype, emulated, eager):
        self.teacher = teacher
        self.dtype = dtype
        self.emulated = emulated
        self.eager = eager
        self.max_relative_error = None
        self.failed = None

    def _low(self, inputs):
        ctx = emulated_precision(self.teacher, self.dtype) if self.emulated \
            else paddle.amp.auto_cast(True, level='O1', dtype=self.dtype)
        with ctx:
            out = self.eager(inputs)
        return {n: o.astype('float32') for n, o in out.items()}

    def __call__(self, inputs):
        if self.failed:
            return self.eager(inputs)
        if self.max_relative_error is not None:  # checked at the first call
            return self._low(inputs)
        ref = self.eager(inputs)
        out = self._low(inputs)
        self.max_relative_error = worst = max_relative_error(out, ref)
        tol = TOLERANCE[self.dtype]
        how = '{}{}'.format(self.dtype, ', emulated in float32 (no speed-up)'
                            if self.emulated else '')
        if not worst <= tol:
            self.failed = 'outputs {:.2e} of their largest value from the ' \
                'float32 ones (tolerance {:.0e})'.format(worst, tol)
            logger.info('Teacher stays float32: {} {}'.format(how,
                                                               self.failed))
            return ref
        logger.info('Teacher forward in {}: outputs within {:.1e} of the '
                    'float32 ones (tolerance {:.0e})'.format(how, worst, tol))
        return out
