"""One download per cached file at a time, across processes.

The ranks of a ``paddle.distributed.launch`` job (or two jobs sharing the
cache) often ask for the same weights URL at the same moment. An flock on
``<file>.lock`` lets one of them download while the others wait, then find
the finished file. The kernel releases the lock when its holder exits, even
by a crash, so no lock goes stale; a holder that is alive but stuck is
detected by its temporary file not growing.
"""
import contextlib
import os
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ..logger import get_logger
from ..errors import WeightsDownloadError

__all__ = ['one_download']

logger = get_logger()


def _parts(dest):
    """Sizes of the temporary files of downloads into `dest` (a waiter's
    sign of progress)."""
    folder, prefix = os.path.split(dest)
    try:
        return tuple(sorted(
            (n, os.path.getsize(os.path.join(folder, n)))
            for n in os.listdir(folder) if n.startswith(prefix + '.part')))
    except OSError:  # the folder or a part went away meanwhile
        return None


def _holder(lock):
    try:
        with open(lock) as f:
            return 'process {}'.format(int(f.read().strip()))
    except (OSError, ValueError):
        return 'another process'


def _acquire(lock, url, dest, stall):
    """An exclusive flock on `lock`, waiting while its holder downloads.
    Gives up with WeightsDownloadError when the holder's temporary file has
    not grown for `stall` seconds (a stuck holder: one that dies releases
    the lock by itself)."""
    next_note = 0
    while True:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        seen, since = _parts(dest), time.time()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            now = _parts(dest)
            if time.time() >= next_note:  # at once, then every 30 s
                logger.info('Waiting for {} downloading {} ({:.1f} MB so '
                            'far)'.format(_holder(lock), url, sum(
                                size for _, size in now or ()) / 2 ** 20))
                next_note = time.time() + 30
            if now != seen:
                seen, since = now, time.time()
            elif time.time() - since > stall:
                who = _holder(lock)
                os.close(fd)
                raise WeightsDownloadError(
                    'cannot download {}: {} has been downloading it into {} '
                    'for {:.0f} s without progress (lock {}); stop it if it '
                    'is stuck'.format(url, who, dest, stall, lock))
            time.sleep(0.1)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed that lock file when done: retry


@contextlib.contextmanager
def one_download(dest, url, timeout):
    """One process at a time downloads into `dest` (the ranks of a
    ``paddle.distributed.launch`` job, or two jobs sharing the cache); the
    others wait and then find the finished file. The holder removes the lock
    file when done, so the cache keeps no trace of it."""
    if fcntl is None:  # not POSIX: every process downloads, atomically
        yield
        return
    lock = dest + '.lock'
    # the holder's reads time out after `timeout` s, so a temporary file
    # that stops growing for longer belongs to a stuck process
    fd = _acquire(lock, url, dest, 2 * timeout + 2)
    try:
        yield
    finally:
        try:
            os.remove(lock)
        except FileNotFoundError:
            pass
        os.close(fd)
