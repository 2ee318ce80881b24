"""Where the weights are: a local path, or a URL downloaded once into a
cache (checksummed, atomic, one download at a time per file)."""
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from ..errors import WeightsDownloadError
from ..fileio import atomic_write
from ..logger import get_logger
from .lock import one_download

__all__ = ['default_cache_dir', 'resolve_weights', 'is_url']

logger = get_logger()


def default_cache_dir():
    """``$DETDISTILL_CACHE``, else ``~/.cache/detdistill/weights``."""
    return os.environ.get('DETDISTILL_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'detdistill', 'weights')


def is_url(s):
    return urllib.parse.urlparse(s).scheme in ('http', 'https', 'file')


def _local_path(path):
    """PaddleDetection style: ``output/x/model_final`` means
    ``output/x/model_final.pdparams``; a file with another suffix (a tar
    archive) or a folder (an extracted 0.5 archive) is taken as it is."""
    path = os.path.expanduser(path)
    if path.endswith('.pdparams'):
        if os.path.isfile(path):
            return path
        raise FileNotFoundError('weights file not found: {}'.format(path))
    if os.path.isfile(path + '.pdparams'):
        return path + '.pdparams'
    if os.path.exists(path):
        return path
    raise FileNotFoundError('weights file not found: {}.pdparams (nor {})'
                            .format(path, path))


def _url_checksums(url, sha256, md5):
    """Split ``#sha256=...`` / ``#md5=...`` off the URL; arguments win."""
    parsed = urllib.parse.urlparse(url)
    frag = dict(urllib.parse.parse_qsl(parsed.fragment))
    want = {'sha256': sha256 or frag.get('sha256'),
            'md5': md5 or frag.get('md5')}
    want = {k: v.strip().lower() for k, v in want.items() if v}
    return urllib.parse.urlunparse(parsed._replace(fragment='')), want


def _digests(path):
    h = {'sha256': hashlib.sha256(), 'md5': hashlib.md5()}
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            for x in h.values():
                x.update(chunk)
    return {k: x.hexdigest() for k, x in h.items()}


def _read_sidecar(path):
    try:
        with open(path + '.sha256') as f:
            return f.read().split()[0].lower()
    except (OSError, IndexError):
        return None


def _write_sidecar(path, sha256):
    """`sha256sum -c` format, written atomically."""
    atomic_write(path + '.sha256', '{}  {}\n'.format(
        sha256, os.path.basename(path)))


class _Progress:
    """A self-overwriting line on a terminal; otherwise a log line every
    quarter (or every 100 MB when the size is unknown)."""

    def __init__(self, name, total, enabled):
        self.name, self.total, self.enabled = name, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.next_mark, self.t0 = 0.25, time.time()

    def update(self, done):
        if not self.enabled:
            return
        mb = done / 2 ** 20
        if self.tty:
            pct = ' {:5.1%}'.format(done / self.total) if self.total else ''
            sys.stderr.write('\rDownloading {}:{} {:.1f} MB'.format(
                self.name, pct, mb))
            sys.stderr.flush()
        elif self.total and done / self.total >= self.next_mark \
                and done < self.total:
            logger.info('Downloading {}: {:.0%} of {:.1f} MB'.format(
                self.name, done / self.total, self.total / 2 ** 20))
            self.next_mark = int(done / self.total * 4) / 4 + 0.25
        elif not self.total and mb >= self.next_mark * 400:
            logger.info('Downloading {}: {:.0f} MB'.format(self.name, mb))
            self.next_mark += 0.25

    def close(self, done):
        if self.tty:
            sys.stderr.write('\n')
        if self.enabled:
            logger.info('Downloaded {} ({:.1f} MB in {:.1f} s)'.format(
                self.name, done / 2 ** 20, time.time() - self.t0))


def _fetch(url, tmp, name, timeout, progress):
    """Stream `url` into `tmp`; return the digests of what was written.
    Every failure is one WeightsDownloadError line naming the URL."""
    h = {'sha256': hashlib.sha256(), 'md5': hashlib.md5()}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, \
                open(tmp, 'wb') as f:
            total = int(r.headers.get('Content-Length') or 0)
            bar = _Progress(name, total, progress)
            done = 0
            for chunk in iter(lambda: r.read(1 << 20), b''):
                f.write(chunk)
                for x in h.values():
                    x.update(chunk)
                done += len(chunk)
                bar.update(done)
            if total and done != total:
                raise WeightsDownloadError(
                    'cannot download {}: connection closed after {} of {} '
                    'bytes'.format(url, done, total))
            bar.close(done)
    except WeightsDownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise WeightsDownloadError('cannot download {}: HTTP {} {}'.format(
            url, e.code, e.reason)) from None
    except urllib.error.URLError as e:
        raise WeightsDownloadError('cannot download {}: {}'.format(
            url, e.reason)) from None
    except TimeoutError:
        raise WeightsDownloadError('cannot download {}: no answer within {} '
                                   's'.format(url, timeout)) from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        # resets, short reads, bad URLs, full disks
        raise WeightsDownloadError('cannot download {}: {}'.format(
            url, e)) from None
    return {k: x.hexdigest() for k, x in h.items()}


def _check(url, want, got):
    for algo, value in want.items():
        if got[algo] != value:
            return 'checksum mismatch for {}: expected {} {}, got {}'.format(
                url, algo, value, got[algo])
    return None


def _cached(dest, url, want, remove):
    """`dest` if it holds a usable copy (its recorded sha256 and any
    expected checksum agree); else None, after removing it if `remove`."""
    if not os.path.isfile(dest):
        return None
    got = _digests(dest)
    recorded = _read_sidecar(dest)
    problem = None
    if recorded and recorded != got['sha256']:
        problem = 'its sha256 differs from the one recorded at download'
    elif _check(url, want, got):
        problem = 'it does not have the expected checksum'
    if problem is None:
        if not recorded:
            _write_sidecar(dest, got['sha256'])
        return dest
    if remove:
        logger.warning('Cached copy {} of {} is not usable ({}); downloading '
                       'again'.format(dest, url, problem))
        os.remove(dest)
    return None


def resolve_weights(path_or_url, cache_dir=None, *, sha256=None, md5=None,
                    timeout=30, progress=True):
    """Return a local file (or folder) for `path_or_url`.

    A local path is returned as it is (``.pdparams`` appended when the path
    has no such file without it); a missing one raises FileNotFoundError
    naming it. A URL (``http``, ``https``, ``file``) is downloaded once into
    ``cache_dir`` (default: ``$DETDISTILL_CACHE`` or
    ``~/.cache/detdistill/weights``) through a temporary file renamed into
    place, so the cache never holds a partial file; later calls use the
    cached copy without network. Processes that ask for the same URL at once
    (the ranks of a distributed job) download it once: one downloads, the
    others wait for the file. An expected ``sha256`` or ``md5`` (arguments,
    or a URL fragment ``#sha256=...`` / ``#md5=...``) is checked; the file's
    sha256 is recorded beside it (``<file>.sha256``) and re-checked on reuse.
    Download failures raise WeightsDownloadError with a one-line message.
    """
    src = os.fspath(path_or_url)
    if not is_url(src):
        return _local_path(src)
    url, want = _url_checksums(src, sha256, md5)
    parsed = urllib.parse.urlparse(url)
    name = os.path.basename(urllib.parse.unquote(parsed.path)) or 'weights'
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    folder = os.path.join(os.path.expanduser(cache_dir or default_cache_dir()),
                          key)
    dest = os.path.join(folder, name)
    if _cached(dest, url, want, remove=False):
        return dest

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise WeightsDownloadError('cannot download {}: cannot create cache '
                                   'directory {}: {}'.format(
                                       url, folder, e.strerror)) from None
    try:
        with one_download(dest, url, timeout):
            # finished by another process while this one waited?
            if _cached(dest, url, want, remove=True):
                return dest
            tmp = '{}.part{}'.format(dest, os.getpid())
            if progress:
                logger.info('Downloading {} to {}'.format(url, dest))
            try:
                got = _fetch(url, tmp, name, timeout, progress)
                problem = _check(url, want, got)
                if problem:
                    raise WeightsDownloadError(problem)
                _write_sidecar(dest, got['sha256'])
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    finally:
        try:
            os.rmdir(folder)  # a failed first download leaves nothing
        except OSError:
            pass  # not empty: the file is there
    return dest
