"""The INT8 network as an ONNX QDQ model. paddle2onnx 2.1.0 maps Paddle's
quantize_linear/dequantize_linear only for float8 (docs/quantization.md),
so the program it converts has no quantization (qdq.onnx_mode: the float
conv weights already hold q_w * s_w) and the QDQ nodes are written here,
into the converted graph, per Int8Conv2D:

    x -> QuantizeLinear(s_x, 0) -> DequantizeLinear(s_x, 0) -> Conv
    int8 q_w -> DequantizeLinear(s_w [C_out], 0, axis=0) ----^

The Conv nodes are found by their weight's name (paddle2onnx keeps the
Paddle parameter's name for the constant it writes). Per-channel
DequantizeLinear needs opset 13.
"""
import numpy as np

from ..errors import OnnxExportError
from .qdq import int8_convs

__all__ = ['OPSET', 'conv_scales', 'insert_qdq']

OPSET = 13


def conv_scales(model):
    """{conv weight parameter name: (layer name, act_scale, weight_scale,
    int8 weight)} of `model`'s Int8Conv2D layers. The nodes written for a
    conv are named after its layer (`<layer>.qdq.x_q` is its int8 input):
    parameter names change from one instance of a model to the next."""
    return {l.conv.weight.name: (name, float(l.act_scale.numpy()[0]),
                                 l.weight_scale.numpy().astype('float32'),
                                 l.int8_weight())
            for name, l in int8_convs(model).items()}


def _const(name, array):
    from onnx import helper, numpy_helper
    return helper.make_node('Constant', [], [name],
                            value=numpy_helper.from_array(array, name))


def insert_qdq(model, scales):
    """Rewrite the onnx ModelProto `model` in place; returns the number of
    Conv nodes given QDQ inputs. Every entry of `scales` must find its
    Conv: an unmatched one fails the export."""
    from onnx import helper, numpy_helper
    producers = {o: n for n in model.graph.node for o in n.output}
    todo = dict(scales)
    new_nodes = []
    for node in model.graph.node:
        if node.op_type != 'Conv' or node.input[1] not in todo:
            new_nodes.append(node)
            continue
        w_name = node.input[1]
        layer, act, w_scale, q_w = todo.pop(w_name)
        const = producers.get(w_name)
        if const is None or const.op_type != 'Constant':
            raise OnnxExportError('Conv weight {} is not a Constant node in '
                                  'the ONNX graph'.format(w_name))
        w = numpy_helper.to_array(const.attribute[0].t)
        if w.shape != q_w.shape:
            raise OnnxExportError('Conv weight {}: ONNX shape {} but the '
                                  'INT8 weight has {}'.format(
                                      w_name, w.shape, q_w.shape))
        # the float constant becomes the dequantized int8 one
        const.output[0] = w_name + '.float_unused'
        p = layer + '.qdq'
        new_nodes += [
            _const(p + '.q', q_w),
            _const(p + '.w_scale', w_scale),
            _const(p + '.w_zero', np.zeros(w_scale.shape, 'int8')),
            helper.make_node('DequantizeLinear',
                             [p + '.q', p + '.w_scale', p + '.w_zero'],
                             [w_name], axis=0),
            _const(p + '.x_scale', np.array(act, 'float32')),
            _const(p + '.x_zero', np.array(0, 'int8')),
            helper.make_node('QuantizeLinear',
                             [node.input[0], p + '.x_scale', p + '.x_zero'],
                             [p + '.x_q']),
            helper.make_node('DequantizeLinear',
                             [p + '.x_q', p + '.x_scale', p + '.x_zero'],
                             [p + '.x_dq']),
        ]
        node.input[0] = p + '.x_dq'
        new_nodes.append(node)
    if todo:
        raise OnnxExportError('{} quantized convs have no Conv node in the '
                              'ONNX graph, e.g. {}'.format(
                                  len(todo), ', '.join(list(todo)[:3])))
    # drop the float weights' constants (their outputs are now unused)
    kept = [n for n in new_nodes if not (
        n.op_type == 'Constant' and n.output[0].endswith('.float_unused'))]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(scales)
