"""The frozen teacher behind one call: `outputs(inputs)` -> {paired layer
name: tensor}.

One chain, each link optional (Distill.teacher):
  cache      outputs of images seen before (teacher_cache.py)
  compiled   a Paddle Inference + oneDNN predictor of the paired forward,
             checked against the eager one at the first call
             (compiled_teacher.py)
  precision  float16 / bfloat16, or their rounding emulated in float32
             (teacher_precision.py)
  eager      the dygraph forward, stopped after the last paired layer: no
             decoding, no NMS (pairing.OutputRecorder)
Each link falls back to the next one with one log line when it cannot run
here, so every configuration trains, and the log says how.

The teacher's parameters never train (`stop_gradient`), it runs without
gradients and stays in eval mode: it is not a sublayer of the distiller, so
the trainer's `train()` never reaches its BatchNorm statistics.
"""
import paddle

from .compiled_teacher import TOLERANCE, CompiledTeacher
from .pairing import OutputRecorder
from .teacher_cache import build_teacher_cache
from .teacher_precision import TOLERANCE as PRECISION_TOLERANCE
from .teacher_precision import LowPrecisionTeacher, choose

__all__ = ['Teacher']


class Teacher:
    """`model` (a ppdet detector with its weights loaded), recorded at
    `names`, run as the Distill.teacher `settings` say; `reader_cfg` (the
    TrainReader config) tells whether its outputs can be cached."""

    def __init__(self, model, names, settings, reader_cfg=None):
        self.model = model
        self.names = list(dict.fromkeys(names))
        for p in model.parameters():
            p.stop_gradient = True
        model.eval()
        how, compile_ = choose(settings['precision'],
                               settings['emulate_precision'],
                               settings['compile'])
        self.low_precision = LowPrecisionTeacher(
            model, settings['precision'], settings['emulate_precision'],
            self.eager) if how in ('amp', 'emulated') else None
        bf16 = how == 'onednn'  # bfloat16 in the compiled teacher
        self.compiled = CompiledTeacher(
            model, self.names, self.eager,
            tolerance=PRECISION_TOLERANCE['bfloat16'] if bf16 else TOLERANCE,
            bfloat16=bf16) if compile_ else None
        self.cache = build_teacher_cache(settings['cache'],
                                         settings['cache_mb'], reader_cfg)

    def outputs(self, inputs):
        """The paired outputs for the batch `inputs`: from the cache for the
        images it holds, from `forward` for the others."""
        if self.cache is not None:
            return self.cache.outputs(inputs, self.forward)
        return self.forward(inputs)

    def forward(self, inputs):
        """The paired outputs computed now (compiled, low precision or
        eager, whichever is on)."""
        if self.compiled is not None:
            return self.compiled(inputs)
        if self.low_precision is not None:
            return self.low_precision(inputs)
        return self.eager(inputs)

    def eager(self, inputs):
        """The dygraph forward in float32, stopped after the last paired
        layer."""
        with paddle.no_grad(), OutputRecorder(self.model, self.names,
                                              stop_when_done=True) as rec:
            self.model(inputs)
        return rec.outputs

    def summary(self):
        """One line for the log at each epoch's end, or None."""
        return self.cache.summary() if self.cache is not None else None
