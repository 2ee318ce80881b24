"""Checkpoints that survive a kill at any moment.

Layout follows PaddleDetection (`<prefix>.pdparams` + `<prefix>.pdopt`), so
`-r output/cfg/12` and `-o weights=output/cfg/best_model` work as users expect.
`.pdparams` holds only the detector's weights (for distillation: the student's;
with EMA: the averaged weights) so it evaluates and exports like any model.
`.pdopt` holds everything else training needs to continue exactly: optimizer
and LR schedule, position, layers trained beside the detector (`extra`: a
distillation's connectors, under `extra`, their optimizer state under
`extra:<name>`), and the sha256 of the `.pdparams` it was saved with.

Both files are written to temporary names and fsynced first, then renamed:
a kill leaves the previous pair or the new one, except in the instant between
the two renames (a Ctrl-C or SIGTERM waits for both). A pair whose `.pdopt` does not name its `.pdparams`'s digest
is refused on resume, so a mixture of two saves never resumes silently.
"""
import glob
import hashlib
import os
import pickle

import paddle

from ..errors import CheckpointError
from ..fileio import replaced, write_aside
from .interrupt import deferred

__all__ = ['CheckpointError', 'atomic_save', 'save_checkpoint',
           'load_checkpoint', 'latest_checkpoint', 'strip_ext',
           'optimizer_state', 'restore_optimizer']


def strip_ext(path):
    for ext in ('.pdparams', '.pdopt'):
        if path.endswith(ext):
            return path[:-len(ext)]
    return path


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _write_aside(obj, path):
    """paddle.save to a temporary file beside `path`, fsynced; returns its
    name (the caller renames it into place)."""
    return write_aside(path, lambda tmp: paddle.save(obj, tmp))


def atomic_save(obj, path):
    """Readers see the old file or the new one, never a torn one."""
    replaced(path, lambda tmp: paddle.save(obj, tmp))


def save_checkpoint(prefix, weights, training=None):
    """`weights` (a state dict) -> `<prefix>.pdparams`; `training` (a dict:
    optimizer state, position, ...) -> `<prefix>.pdopt`, with the digest of
    the `.pdparams` written beside it."""
    os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
    tmps = []
    try:
        tmps.append(_write_aside(weights, prefix + '.pdparams'))
        if training is not None:
            training = dict(training, params_sha256=_sha256(tmps[0]))
            tmps.append(_write_aside(training, prefix + '.pdopt'))
        with deferred():  # a Ctrl-C must not split the pair
            for tmp in tmps:  # .pdparams first: a .pdopt names its weights
                os.replace(tmp, tmp.rsplit('.tmp', 1)[0])
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
    try:
        fd = os.open(os.path.dirname(prefix) or '.', os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames themselves
        finally:
            os.close(fd)
    except OSError:
        pass  # not every file system lets a directory be fsynced


def latest_checkpoint(folder):
    """Prefix of the newest complete epoch checkpoint (`<epoch>.pdparams`
    and `<epoch>.pdopt`) in `folder`, or None."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    epochs = [int(n[:-len('.pdopt')]) for n in names
              if n.endswith('.pdopt') and n[:-len('.pdopt')].isdigit() and
              n[:-len('.pdopt')] + '.pdparams' in names]
    return os.path.join(folder, str(max(epochs))) if epochs else None


def _others(prefix):
    found = sorted(strip_ext(p) for p in glob.glob(os.path.join(
        os.path.dirname(prefix) or '.', '*.pdopt')) if strip_ext(p) != prefix)
    return ', '.join(found[-4:]) or 'none'


def load_checkpoint(prefix):
    """-> (weights, training) of a complete, consistent pair; CheckpointError
    naming the files otherwise."""
    prefix = strip_ext(prefix)
    for ext in ('.pdparams', '.pdopt'):
        if not os.path.isfile(prefix + ext):
            raise CheckpointError(
                'cannot resume from {}: {} is missing (a checkpoint needs '
                'both .pdparams and .pdopt)'.format(prefix, prefix + ext))
    try:
        weights = paddle.load(prefix + '.pdparams')
        training = paddle.load(prefix + '.pdopt')
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise CheckpointError('cannot read checkpoint {}: {}'.format(
            prefix, e)) from None
    if not isinstance(training, dict) or 'state' not in training:
        raise CheckpointError(
            '{}.pdopt was not written by this toolkit (no training state); '
            'use --pretrained to start from its weights instead'.format(prefix))
    want = training.get('params_sha256')
    if want is not None and want != _sha256(prefix + '.pdparams'):
        raise CheckpointError(
            '{0}.pdparams and {0}.pdopt come from different saves (a process '
            'was stopped while writing {0}): resuming would mix weights of '
            'one step with the optimizer and position of another. Resume '
            'from another checkpoint (in that directory: {1}), or start '
            'from the weights alone with --pretrained {0}'.format(
                prefix, _others(prefix)))
    return weights, training


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


EXTRA = 'extra:'  # a prefix no parameter's structured name has


def _structured(model, extra=None):
    names = {p.name: n for n, p in model.named_parameters()}
    if extra is not None:
        names.update({p.name: EXTRA + n for n, p in extra.named_parameters()})
    return names


def optimizer_state(optimizer, model, extra=None):
    """The optimizer's state under `model`'s structured parameter names
    (and `extra`'s, prefixed `extra:`)."""
    return _rename_accumulators(optimizer.state_dict(),
                                _structured(model, extra))


def restore_optimizer(optimizer, model, saved, extra=None):
    back = {v: k for k, v in _structured(model, extra).items()}
    optimizer.set_state_dict(_rename_accumulators(saved, back))
