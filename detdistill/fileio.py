"""Files written so that a kill never leaves a torn one, class-name lists
and image extensions: what every other module shares."""
import os

from .errors import VOCDataError

__all__ = ['IMAGE_EXTS', 'write_aside', 'atomic_write', 'replaced',
           'read_label_list']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


def write_aside(path, write, suffix=''):
    """`write(tmp)` to a temporary name beside `path`, fsynced; returns that
    name for the caller to rename into place (several files can then be
    renamed together). On failure the temporary file is removed. `suffix`
    keeps an extension that a writer reads the format from (".png")."""
    tmp = '{}.tmp{}{}'.format(path, os.getpid(), suffix)
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def replaced(path, write, suffix=''):
    """`write(tmp)`, then the result replaces `path` in one rename: readers
    see the old file or the new one, never a partial one."""
    os.replace(write_aside(path, write, suffix), path)
    return path


def atomic_write(path, data):
    """`data` (str or bytes) into `path`, atomically."""
    mode = 'wb' if isinstance(data, bytes) else 'w'

    def write(tmp):
        with open(tmp, mode) as f:
            f.write(data)
    return replaced(path, write)


def read_label_list(path):
    """The class names of a label list (one per line, blank lines ignored);
    VOCDataError names the file when it is missing or empty."""
    if not os.path.isfile(path):
        raise VOCDataError('label list {} does not exist'.format(path))
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise VOCDataError('label list {} is empty'.format(path))
    return names
