"""Quantization wrappers for training and calibration, and the conversion
to the INT8 network (qdq.py).

The wrappers are paddle.quantization's (PTQ, QAT, QuantConfig: Paddle's
own API, dygraph) with PaddleSlim 2.6's per-channel weight observer and
quanter, which plug into that API. PaddleSlim's own dygraph PTQ/QAT classes
(paddleslim.PTQ, paddleslim.QAT) wrap Paddle's legacy
ImperativeQuantAware/ImperativePTQ and save through the legacy program
format; the project exports Paddle 3's PIR programs, so they are not used
(docs/quantization.md).

    activation  per tensor, abs max: PTQ AbsmaxObserver (the largest value
                over the calibration images), QAT FakeQuanterWithAbsMax-
                Observer (moving average of the batches' abs max)
    weight      per output channel, abs max (PaddleSlim)

Only Conv2D layers are quantized (a YOLOv3 or GFL has no Linear layer):
their inputs and weights. Everything else stays float32.
"""
import copy

import paddle
from paddle import nn

from ..errors import QuantizationError
from .qdq import QMAX, QMIN, Int8Conv2D, _replace_sublayers, rebind_lists

__all__ = ['quant_config', 'prepare', 'quanted_convs', 'convert']


def quant_config(mode, moving_rate=0.9):
    from paddle.quantization import QuantConfig
    from paddle.quantization.observers import AbsmaxObserver
    from paddle.quantization.quanters import FakeQuanterWithAbsMaxObserver
    from paddleslim.quant.observers import AbsMaxChannelWiseWeightObserver
    from paddleslim.quant.quanters import \
        FakeQuanterChannelWiseAbsMaxObserver
    config = QuantConfig(activation=None, weight=None)
    if mode == 'ptq':
        config.add_type_config(nn.Conv2D, activation=AbsmaxObserver(),
                               weight=AbsMaxChannelWiseWeightObserver())
    elif mode == 'qat':
        config.add_type_config(
            nn.Conv2D,
            activation=FakeQuanterWithAbsMaxObserver(moving_rate=moving_rate),
            weight=FakeQuanterChannelWiseAbsMaxObserver())
    else:
        raise QuantizationError("quantization mode must be 'ptq' or 'qat', "
                                "got {!r}".format(mode))
    return config


def prepare(model, mode):
    """A copy of `model` with its Conv2D layers wrapped for PTQ calibration
    (eval mode) or QAT (train mode). The copy's Python lists of layers are
    pointed at the wrapped layers (qdq.rebind_lists): without that,
    YOLOv3Head's output convs are never observed."""
    from paddle.quantization import PTQ, QAT
    model = copy.deepcopy(model)
    before = {id(l): (p, n) for p in [model] + list(model.sublayers())
              for n, l in p._sub_layers.items()}
    if mode == 'ptq':
        model.eval()
        PTQ(quant_config('ptq')).quantize(model, inplace=True)
    else:
        model.train()
        QAT(quant_config('qat')).quantize(model, inplace=True)
    rebind_lists(model, {i: p._sub_layers[n] for i, (p, n) in before.items()
                         if p._sub_layers.get(n) is not None})
    return model


def quanted_convs(qmodel):
    from paddle.nn.quant.qat import QuantedConv2D
    return {n: l for n, l in qmodel.named_sublayers()
            if isinstance(l, QuantedConv2D)}


def _scale(quanter, name, what):
    s = quanter.scales()
    if s is None or not bool(paddle.isfinite(s).all()) or \
            float(paddle.abs(s).min()) <= 0:
        raise QuantizationError(
            '{}: no usable {} scale ({}): was the layer run during '
            'calibration or training?'.format(name, what, s))
    return s.astype('float32') / QMAX


def convert(float_model, qmodel):
    """The INT8 network of `qmodel` (prepared from `float_model` and
    calibrated or trained): a copy of `float_model` with qmodel's weights,
    each quantized Conv2D replaced by an Int8Conv2D with qmodel's scales."""
    convs = quanted_convs(qmodel)
    if not convs:
        raise QuantizationError('the model has no quantized Conv2D layer')
    model = copy.deepcopy(float_model)
    own = model.state_dict()
    model.set_state_dict({k: v for k, v in qmodel.state_dict().items()
                          if k in own})
    model.eval()
    layers = dict(model.named_sublayers())
    ids = {}
    for name, q in convs.items():
        act = _scale(q.activation_quanter, name, 'activation')
        w_scale = _scale(q.weight_quanter, name, 'weight').reshape([-1])
        conv = layers[name]
        w = conv.weight
        s = w_scale.reshape([-1] + [1] * (len(w.shape) - 1))
        # q_w * s_w in float32: what DequantizeLinear computes. The int8
        # values are stored in the ONNX model as they are, so the rounding
        # rule here (ties away from zero) needs no ONNX counterpart.
        q_w = paddle.clip(paddle.round(w / s), QMIN, QMAX)
        conv.weight.set_value(q_w * s)
        ids[id(conv)] = Int8Conv2D(conv, act.reshape([1]), w_scale)
    _replace_sublayers(model, lambda l: id(l) in ids, lambda l: ids[id(l)])
    return model
