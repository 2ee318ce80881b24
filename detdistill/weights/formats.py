"""What is in a weights file: one reader per format, each returning
``{name: array}``."""
import os
import tarfile

import numpy as np
import paddle

from .errors import WeightsFileError

__all__ = ['FORMATS', 'read_state_dict']


def _read_pdparams(path):
    """Dygraph ``paddle.save`` pickles (``.pdparams``, and our checkpoints)."""
    try:
        return paddle.load(path)
    except (ValueError, EOFError, OSError, RuntimeError, AttributeError,
            ImportError, IndexError, KeyError, TypeError) as e:
        try:
            with open(path, 'rb') as f:
                head = f.read(64)
            size = os.path.getsize(path)
        except OSError:
            head, size = b'', -1
        if head.lstrip()[:1] == b'<':
            what = 'it looks like an HTML/XML page, not weights'
        elif size == 0:
            what = 'the file is empty'
        elif 'can not parse' in str(e):
            what = 'truncated or corrupt ({} bytes that paddle.load cannot ' \
                'parse)'.format(size)
        else:
            what = 'truncated or corrupt ({} bytes; {}: {})'.format(
                size, type(e).__name__,
                (str(e).strip().splitlines() or [''])[0][:160])
        raise WeightsFileError('cannot read weights file {}: {}'.format(
            path, what)) from None


def _read_static_tar(path):
    """PaddleDetection 0.x (static graph) released ``.tar`` archives of
    per-variable files with fluid names (``res2a_branch2a_weights``); they
    need a name map to ppdet 2.x models. Recognised now, read later."""
    raise WeightsFileError(
        'cannot read weights file {}: a PaddleDetection static-graph tar '
        'archive (0.x era) is not supported yet; use a 2.x .pdparams '
        'checkpoint'.format(path))


def _looks_like_tar(path, head):
    return not head.startswith(b'\x80') and tarfile.is_tarfile(path)


# (name, test(path, first 512 bytes) -> bool, reader(path) -> object). The
# first format whose test passes reads the file; the last one catches all.
FORMATS = [
    ('static-tar', _looks_like_tar, _read_static_tar),
    ('pdparams', lambda path, head: True, _read_pdparams),
]

_NESTED = ('model', 'state_dict')  # {'model': state_dict, 'epoch': ...}


def _is_array(v):
    return isinstance(v, (paddle.Tensor, np.ndarray))


def read_state_dict(path):
    """``{name: array}`` from a weights file, whatever its format.

    A checkpoint that nests the weights (``{'model': state_dict, ...}``) is
    unwrapped; non-array entries (Paddle's ``StructuredToParameterName@@``
    table, metadata) are dropped. Unreadable files raise WeightsFileError
    naming the file.
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(512)
    except OSError as e:
        raise WeightsFileError('cannot read weights file {}: {}'.format(
            path, e.strerror or e)) from None
    reader = next(read for _, test, read in FORMATS if test(path, head))
    obj = reader(path)
    if isinstance(obj, dict):
        for key in _NESTED:
            if isinstance(obj.get(key), dict) and any(
                    _is_array(v) for v in obj[key].values()):
                obj = obj[key]
                break
    state = {k: v for k, v in obj.items() if _is_array(v)} \
        if isinstance(obj, dict) else {}
    if not state:
        what = 'keys: {}'.format(', '.join(map(str, list(obj)[:8]))) \
            if isinstance(obj, dict) and obj else type(obj).__name__
        raise WeightsFileError('weights file {} holds no weights ({})'.format(
            path, what))
    return state
