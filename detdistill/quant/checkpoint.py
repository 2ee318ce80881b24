"""INT8 checkpoints: the converted network's state dict (Int8Conv2D's conv
weights hold q_w * s_w; `act_scale` and `weight_scale` are buffers), saved
as any weights are, and recognised by those buffers' keys."""
from ..errors import QuantizationError
from ..weights import load_weights
from ..weights.formats import read_weights
from ..weights.download import resolve_weights
from .qdq import as_int8_structure

__all__ = ['int8_layer_names', 'is_int8_checkpoint', 'load_int8',
           'load_any_weights']

SUFFIX = '.act_scale'


def int8_layer_names(state):
    return [k[:-len(SUFFIX)] for k in state if k.endswith(SUFFIX)]


def _state(path):
    return read_weights(resolve_weights(path)).state


def is_int8_checkpoint(path):
    return bool(int8_layer_names(_state(path)))


def load_int8(detector, path):
    """Give `detector` (freshly built) the INT8 structure the checkpoint at
    `path` has and load it exactly (weights.load_weights: any missing,
    unexpected or misshaped key is an error naming the file)."""
    names = int8_layer_names(_state(path))
    if not names:
        raise QuantizationError(
            '{} is not an INT8 checkpoint (no {} keys): tools/quantize.py '
            'writes one (int8.pdparams)'.format(path, SUFFIX))
    as_int8_structure(detector, names)
    load_weights(detector, path)
    detector.eval()
    return detector


def load_any_weights(detector, path):
    """An INT8 checkpoint (load_int8) or float weights (load_weights): what
    the inference-side tools (eval, export, infer) load."""
    if is_int8_checkpoint(path):
        return load_int8(detector, path)
    return load_weights(detector, path)
