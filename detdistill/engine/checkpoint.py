"""Checkpoints that survive a kill at any moment.

Layout follows PaddleDetection (`<prefix>.pdparams` + `<prefix>.pdopt`), so
`-r output/cfg/12` and `-o weights=output/cfg/best_model` work as users expect.
`.pdparams` holds only the detector's weights (for distillation: the student's)
so it evaluates and exports like any model. `.pdopt` holds the optimizer (with
its LR schedule) and the training position; it is written last, so a prefix
with a `.pdopt` is complete.
"""
import os
import pickle

import paddle

__all__ = ['CheckpointError', 'atomic_save', 'save_checkpoint',
           'load_checkpoint', 'strip_ext']


class CheckpointError(RuntimeError):
    pass


def strip_ext(path):
    for ext in ('.pdparams', '.pdopt'):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def atomic_save(obj, path):
    """Write to a temporary file in the same directory, fsync, then rename:
    readers see the old file or the new one, never a torn one."""
    tmp = '{}.tmp{}'.format(path, os.getpid())
    paddle.save(obj, tmp)
    with open(tmp, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _rename_accumulators(opt_state, mapping):
    """Paddle keys optimizer state by generated parameter names
    (`conv2d_830.w_0_velocity_0`), which depend on how many layers the
    process built before. Store them under structured names instead
    (`backbone.conv1._conv.weight_velocity_0`) so any process can resume."""
    olds = sorted(mapping, key=len, reverse=True)
    out = {}
    for k, v in opt_state.items():
        new = next((mapping[o] + k[len(o):] for o in olds
                    if k.startswith(o + '_')), k)
        out[new] = v
    return out


def _structured(model):
    return {p.name: n for n, p in model.named_parameters()}


def save_checkpoint(prefix, model, optimizer=None, state=None):
    os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
    atomic_save(model.state_dict(), prefix + '.pdparams')
    if optimizer is not None:
        opt = _rename_accumulators(optimizer.state_dict(), _structured(model))
        atomic_save({'optimizer': opt, 'state': dict(state or {})},
                    prefix + '.pdopt')


def load_checkpoint(prefix, model, optimizer):
    """Restore weights and optimizer exactly; return the saved training state
    (epoch, step, best metric, ...)."""
    prefix = strip_ext(prefix)
    for ext in ('.pdparams', '.pdopt'):
        if not os.path.isfile(prefix + ext):
            raise CheckpointError(
                'cannot resume from {}: {} is missing (a checkpoint needs '
                'both .pdparams and .pdopt)'.format(prefix, prefix + ext))
    try:
        weights = paddle.load(prefix + '.pdparams')
        opt = paddle.load(prefix + '.pdopt')
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise CheckpointError('cannot read checkpoint {}: {}'.format(
            prefix, e)) from None
    if not isinstance(opt, dict) or 'state' not in opt:
        raise CheckpointError(
            '{}.pdopt was not written by this toolkit (no training state); '
            'use --pretrained to start from its weights instead'.format(prefix))
    own = model.state_dict()
    bad = sorted(set(own) ^ set(weights)) + sorted(
        k for k in set(own) & set(weights)
        if list(own[k].shape) != list(weights[k].shape))
    if bad:
        raise CheckpointError('{}.pdparams does not match the model: {} '
                              'keys differ, e.g. {}'.format(
                                  prefix, len(bad), ', '.join(bad[:5])))
    model.set_state_dict(weights)
    back = {v: k for k, v in _structured(model).items()}
    optimizer.set_state_dict(_rename_accumulators(opt['optimizer'], back))
    return opt['state']
