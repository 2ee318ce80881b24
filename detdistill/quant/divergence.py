"""The reference an INT8 ONNX export is checked against: the dygraph network
fed, at every conv, the int8 input ONNX Runtime computed there.

Both sides quantize a conv's input the same way (bit-exact, tested), but
ONNX Runtime's float convolutions sum in another order than Paddle's. Where
a value lands within that rounding (~1e-6 of a step) of a half step, the
two sides round it to neighbouring int8 values, and the layers after it
spread the difference: on the BCCD students, 13 of 73 test images parted
this way, by up to 0.16 in score. Compared end to end, no tolerance tells
that from a wrong export. Fed ONNX Runtime's int8 activations, the dygraph
network has nothing to spread, and its outputs must equal ONNX Runtime's
within the float tolerance; each conv's own rounding of its input may
differ from ONNX Runtime's only at ties: one step, within TIE_STEPS of a
half step. A wrong export (a scale, a weight, a missing quantization)
breaks one or the other, at the conv where it is wrong.
"""
import numpy as np
import paddle

from .qdq import QMAX, QMIN, int8_convs

__all__ = ['TIE_STEPS', 'classify', 'onnx_int8_reader', 'forced_reference']

# How close to a half step a value rounded differently may sit, in steps.
# Measured on the BCCD PTQ student: each parted image started from one or
# two elements at most 1.9e-5 steps from the tie (many exactly on it); a
# wrong scale spreads the distances over [0, 0.5].
TIE_STEPS = 1e-3


def classify(ref_steps, got_q):
    """ref_steps: a conv's input in steps (x / scale, float32) on our side;
    got_q: ONNX Runtime's int8 input. None if they agree, else {elements,
    max_steps, max_tie_distance, tie}."""
    ref_q = np.clip(np.round(ref_steps), QMIN, QMAX)  # numpy: half to even
    diff = np.abs(ref_q - got_q.astype('float32'))
    bad = diff > 0
    if not bad.any():
        return None
    v = ref_steps[bad].astype('float64')
    tie = np.abs(np.abs(v - np.floor(v)) - 0.5)
    out = {'elements': int(bad.sum()), 'max_steps': int(diff.max()),
           'max_tie_distance': float(tie.max())}
    out['tie'] = out['max_steps'] == 1 and \
        out['max_tie_distance'] <= TIE_STEPS
    return out


def onnx_int8_reader(onnx_path, layers, threads=1):
    """A function feed -> (the export's outputs, {layer: int8 input}) that
    runs the export at `onnx_path` reading also every conv's int8 input
    (quant/onnx_qdq.py names it `<layer>.qdq.x_q`); its session is built
    once."""
    import onnx
    from onnx import helper
    from ..deploy.predictor import onnx_session
    graph = onnx.load(onnx_path)
    n_out = len(graph.graph.output)
    for name in layers:
        graph.graph.output.append(helper.make_tensor_value_info(
            name + '.qdq.x_q', onnx.TensorProto.INT8, None))
    sess = onnx_session(graph.SerializeToString(), threads)

    def read(feed):
        got = sess.run(None, {i.name: np.ascontiguousarray(
            feed[i.name], dtype='float32') for i in sess.get_inputs()})
        return got[:n_out], dict(zip(layers, got[n_out:]))
    return read


def forced_reference(model, feed, int8_inputs, reference):
    """reference(model, feed), the dygraph outputs, with each Int8Conv2D of
    `model` fed int8_inputs[its name] instead of its own rounding. Returns
    (outputs, {layer: classify(own input, ONNX input)} where they differ)."""
    parted, hooks = {}, []

    def hook(name, layer):
        def force(_, inputs):
            scale = layer.act_scale
            found = classify((inputs[0] / scale).numpy(), int8_inputs[name])
            if found:
                parted[name] = found
            q = paddle.to_tensor(int8_inputs[name].astype('float32'))
            return (q * scale,) + tuple(inputs[1:])
        return force
    for name, layer in int8_convs(model).items():
        hooks.append(layer.register_forward_pre_hook(hook(name, layer)))
    try:
        out = reference(model, feed)
    finally:
        for h in hooks:
            h.remove()
    return out, parted
