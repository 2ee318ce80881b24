"""The converted INT8 network: every quantized Conv2D becomes an Int8Conv2D
that computes, in float32, exactly what an ONNX QDQ graph computes,

    x_q = DequantizeLinear(QuantizeLinear(x, s_x)) = clip(rne(x / s_x),
          -128, 127) * s_x                       (per tensor)
    w_q = q_w * s_w, q_w int8                   (per output channel)
    y   = conv(x_q, w_q) + b

with rne = round half to even, as ONNX's QuantizeLinear rounds (paddle.round
rounds half away from zero). The weights are stored already dequantized
(q_w * s_w in float32: exactly the values DequantizeLinear gives), so the
Paddle program needs no quantize/dequantize operator at all.

Why not Paddle's own converted layers (paddle.quantization's convert(),
LinearQuanter/LinearDequanter), on Paddle 3.3.1 (docs/quantization.md):
paddle.jit.save fails with a dynamic batch (they create a persistable value
of the input's shape, -1 included); with the weights stored as integers the
saved program fails to load in Paddle Inference ("Tensor holds no memory",
CastKernel); with remain_weight=True Paddle Inference's passes remove the
quantize/dequantize pairs, so it runs another network than dygraph; and
paddle2onnx 2.1.0 converts quantize_linear only for float8 (qmax 448 or
57344: "Only support e4m3 or e5m2 now", then SIGABRT).
"""
import paddle
from paddle import nn

__all__ = ['QMIN', 'QMAX', 'round_half_even', 'fake_quant', 'Int8Conv2D',
           'int8_convs', 'as_int8_structure', 'onnx_mode']

QMIN, QMAX = -128, 127


def round_half_even(v):
    """Round to nearest, ties to even (ONNX QuantizeLinear, numpy.rint)."""
    r = paddle.round(v)  # ties away from zero
    tie = paddle.abs(v - paddle.floor(v)) == 0.5
    return paddle.where(tie, 2. * paddle.round(v / 2.), r)


def fake_quant(x, scale):
    """QuantizeLinear then DequantizeLinear with int8 zero point 0."""
    return paddle.clip(round_half_even(x / scale), QMIN, QMAX) * scale


class Int8Conv2D(nn.Layer):
    """`conv` (a Conv2D whose weight already holds q_w * weight_scale) fed
    with its input fake-quantized by `act_scale`. Buffers, so that they are
    saved, loaded and exported with the weights:
      act_scale     [1]      ONNX y_scale of the input (abs max / 127)
      weight_scale  [C_out]  ONNX per-channel scale of the weight
    """

    def __init__(self, conv, act_scale=None, weight_scale=None):
        super().__init__()
        self.conv = conv
        c_out = conv.weight.shape[0]
        self.register_buffer('act_scale', paddle.to_tensor(
            [1.] if act_scale is None else act_scale, 'float32').reshape([1]))
        self.register_buffer('weight_scale', paddle.to_tensor(
            [1.] * c_out if weight_scale is None else weight_scale,
            'float32').reshape([c_out]))
        # True while exporting the program paddle2onnx converts: the QDQ
        # nodes are then written into the ONNX graph (onnx_qdq.py).
        self.skip_act_quant = False

    def forward(self, x):
        if not self.skip_act_quant:
            x = fake_quant(x, self.act_scale)
        return self.conv(x)

    def int8_weight(self):
        """q_w as int8 numpy, recovered exactly from the stored weight."""
        w = self.conv.weight.numpy()
        s = self.weight_scale.numpy().reshape([-1] + [1] * (w.ndim - 1))
        return (w / s).round().clip(QMIN, QMAX).astype('int8')


def int8_convs(model):
    """{name: Int8Conv2D} of `model`, in registration order."""
    return {n: l for n, l in model.named_sublayers()
            if isinstance(l, Int8Conv2D)}


def _replace_sublayers(model, should_replace, make):
    """Replace every sublayer for which should_replace(layer) holds with
    make(layer), also where a plain Python list holds it: ppdet keeps some
    layers in lists besides registering them (YOLOv3Head.yolo_outputs calls
    its output convs through one), and a replacement those lists do not see
    is silently bypassed. Returns the replaced names."""
    replaced = {}
    for parent in [model] + list(model.sublayers()):
        for name, layer in list(parent._sub_layers.items()):
            if layer is not None and should_replace(layer):
                new = make(layer)
                parent._sub_layers[name] = new
                replaced[id(layer)] = new
    rebind_lists(model, replaced)
    return replaced


def rebind_lists(model, replaced):
    """Point Python lists of layers at their replacements ({id(old): new})."""
    for layer in [model] + list(model.sublayers()):
        for value in vars(layer).values():
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, nn.Layer) and id(item) in replaced:
                        value[i] = replaced[id(item)]


def as_int8_structure(model, names=None):
    """Give a freshly built float model the structure of a converted one
    (each Conv2D, or those at `names`, wrapped in an Int8Conv2D with
    placeholder scales), so that a quantized checkpoint loads into it."""
    targets = None if names is None else {
        id(l) for n, l in model.named_sublayers() if n in set(names)}
    _replace_sublayers(
        model, lambda l: type(l) is nn.Conv2D and
        (targets is None or id(l) in targets), Int8Conv2D)
    return model


class onnx_mode:
    """Within: Int8Conv2D skips its input fake-quantization (the program
    paddle2onnx converts gets the QDQ nodes afterwards)."""

    def __init__(self, model):
        self.layers = list(int8_convs(model).values())

    def __enter__(self):
        for l in self.layers:
            l.skip_act_quant = True

    def __exit__(self, *exc):
        for l in self.layers:
            l.skip_act_quant = False
