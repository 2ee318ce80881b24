"""What is in a weights file or folder: one reader per format, each
returning a record with the same fields (see Pickle)."""
import os
import tarfile

import numpy as np
import paddle

from ..errors import WeightsFileError
from .static_archive import read_static

__all__ = ['FORMATS', 'read_weights', 'read_state_dict']


def _load_pickle(path):
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


_NESTED = ('model', 'state_dict')  # {'model': state_dict, 'epoch': ...}


def _is_array(v):
    return isinstance(v, (paddle.Tensor, np.ndarray))


class Pickle:
    """What a reader found (static_archive.StaticArchive has the same
    fields): `state` {ppdet 2.x name: array}, `skipped` (tensors left out on
    purpose, e.g. optimizer state), `file_name(key)` (the file's own name
    for a key, when it differs) and `describe()`."""
    skipped = ()

    def __init__(self, path, state):
        self.path, self.state = path, state

    def file_name(self, key):
        return None

    def describe(self):
        return ''


def _read_pdparams(path):
    """Dygraph ``paddle.save`` pickles (``.pdparams``, our checkpoints).
    A checkpoint that nests the weights (``{'model': state_dict, ...}``) is
    unwrapped; non-array entries (Paddle's ``StructuredToParameterName@@``
    table, metadata) are dropped."""
    obj = _load_pickle(path)
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
    return Pickle(path, state)


def _looks_like_tar(path, head):
    return head is not None and not head.startswith(b'\x80') \
        and tarfile.is_tarfile(path)


# (name, test(path, first 512 bytes or None for a folder) -> bool,
# reader(path) -> record). The first format whose test passes reads the file;
# the last one catches all files.
FORMATS = [
    ('static-folder', lambda path, head: head is None, read_static),
    ('static-tar', _looks_like_tar, read_static),
    ('pdparams', lambda path, head: head is not None, _read_pdparams),
]


def read_weights(path):
    """The record (``.state``, ``.skipped``, ...) for a weights file or
    folder, by the first format in FORMATS that recognises it. Unreadable
    files raise WeightsFileError naming the file."""
    head = None
    if not os.path.isdir(path):
        try:
            with open(path, 'rb') as f:
                head = f.read(512)
        except OSError as e:
            raise WeightsFileError('cannot read weights file {}: {}'.format(
                path, e.strerror or e)) from None
    reader = next(read for _, test, read in FORMATS if test(path, head))
    return reader(path)


def read_state_dict(path):
    """``{ppdet 2.x name: array}`` from a weights file or folder, whatever
    its format (a PaddleDetection 0.5 archive is renamed, its optimizer state
    left out)."""
    return read_weights(path).state
