"""Loading weights with a report, from a path or a URL.

ppdet calls ``warnings.filterwarnings("ignore")`` at import, which hides
Paddle's "Skip loading for ..." warnings: an 80-class COCO checkpoint loaded
into a 20-class VOC model would silently leave the head random. Every load
here compares names and shapes itself and reports matched, missing,
unexpected and shape-mismatched keys; anything not explicitly allowed is an
error naming the file.

Three layers, each usable on its own:

- ``resolve_weights(path_or_url)``: a local file (PaddleDetection style, the
  ``.pdparams`` suffix optional) or a URL downloaded once into a cache, with
  checksums;
- ``read_state_dict(path)``: a file -> ``{name: array}``, by one reader
  function per file format (``FORMATS``; PaddleDetection's static-graph tar
  archives are recognised, and get a reader of their own later);
- ``load_weights(model, path_or_url)``: both of the above, then the
  comparison, the load and the report.
"""
import hashlib
import http.client
import os
import re
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import paddle
from paddle.base.data_feeder import convert_dtype

from .logger import get_logger

__all__ = ['WeightsMismatchError', 'WeightsFileError', 'WeightsDownloadError',
           'LoadReport', 'FORMATS', 'default_cache_dir', 'resolve_weights',
           'read_state_dict', 'load_weights', 'load_pretrain', 'HEAD_KEYS']

logger = get_logger()

# Class-count-dependent layers of every ppdet YOLOv3: kept at their
# initialisation, with a report, when a checkpoint trained on another dataset
# is loaded as pretraining.
HEAD_KEYS = r'yolo_head\.yolo_output\.'
_SHOW = 6  # keys listed in an error message


class WeightsMismatchError(ValueError):
    """The checkpoint's names or shapes do not fit the model."""


class WeightsFileError(WeightsMismatchError):
    """The file cannot be read as weights (truncated, corrupt, unsupported
    format). A subclass of WeightsMismatchError so that callers handling
    "these weights do not fit" also handle "these are not weights"."""


class WeightsDownloadError(RuntimeError):
    """A URL could not be fetched, or its content failed its checksum."""


# --------------------------------------------------------------------------
# Where the file is: local paths and cached downloads

def default_cache_dir():
    """``$DETDISTILL_CACHE``, else ``~/.cache/detdistill/weights``."""
    return os.environ.get('DETDISTILL_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'detdistill', 'weights')


def _is_url(s):
    return urllib.parse.urlparse(s).scheme in ('http', 'https', 'file')


def _local_path(path):
    """PaddleDetection style: ``output/x/model_final`` means
    ``output/x/model_final.pdparams``; a file with another suffix (a tar
    archive) is taken as it is."""
    path = os.path.expanduser(path)
    if path.endswith('.pdparams'):
        if os.path.isfile(path):
            return path
        raise FileNotFoundError('weights file not found: {}'.format(path))
    if os.path.isfile(path + '.pdparams'):
        return path + '.pdparams'
    if os.path.isfile(path):
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
    tmp = '{}.sha256.tmp{}'.format(path, os.getpid())
    with open(tmp, 'w') as f:
        f.write('{}  {}\n'.format(sha256, os.path.basename(path)))
    os.replace(tmp, path + '.sha256')


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


def resolve_weights(path_or_url, cache_dir=None, *, sha256=None, md5=None,
                    timeout=30, progress=True):
    """Return a local file for `path_or_url`.

    A local path is returned as it is (``.pdparams`` appended when the path
    has no such file without it); a missing one raises FileNotFoundError
    naming it. A URL (``http``, ``https``, ``file``) is downloaded once into
    ``cache_dir`` (default: ``$DETDISTILL_CACHE`` or
    ``~/.cache/detdistill/weights``) through a temporary file renamed into
    place, so the cache never holds a partial file; later calls use the
    cached copy without network. An expected ``sha256`` or ``md5`` (arguments,
    or a URL fragment ``#sha256=...`` / ``#md5=...``) is checked; the file's
    sha256 is recorded beside it (``<file>.sha256``) and re-checked on reuse.
    Download failures raise WeightsDownloadError with a one-line message.
    """
    src = os.fspath(path_or_url)
    if not _is_url(src):
        return _local_path(src)
    url, want = _url_checksums(src, sha256, md5)
    parsed = urllib.parse.urlparse(url)
    name = os.path.basename(urllib.parse.unquote(parsed.path)) or 'weights'
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    folder = os.path.join(os.path.expanduser(cache_dir or default_cache_dir()),
                          key)
    dest = os.path.join(folder, name)

    if os.path.isfile(dest):
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
        logger.warning('Cached copy {} of {} is not usable ({}); downloading '
                       'again'.format(dest, url, problem))
        os.remove(dest)

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise WeightsDownloadError('cannot download {}: cannot create cache '
                                   'directory {}: {}'.format(
                                       url, folder, e.strerror)) from None
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
        if not os.listdir(folder):
            os.rmdir(folder)  # a failed first download leaves nothing
    return dest


# --------------------------------------------------------------------------
# What is in the file: one reader per format

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


# --------------------------------------------------------------------------
# Loading, with a report

def _shape(v):
    return [int(d) for d in v.shape]


class LoadReport:
    """What a load did. `mismatched` maps key -> (model shape, file shape);
    `kept` lists the keys that kept the model's initialisation because an
    `allow_mismatch` pattern allowed it."""

    def __init__(self, path, matched, missing, unexpected, mismatched, kept):
        self.path, self.matched = path, matched
        self.missing, self.unexpected = missing, unexpected
        self.mismatched, self.kept = mismatched, kept

    @property
    def complete(self):
        """Every model key was loaded from the file and every file key used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self):
        return '{} matched, {} missing, {} unexpected, {} shape-mismatched' \
            .format(len(self.matched), len(self.missing),
                    len(self.unexpected), len(self.mismatched))

    def __str__(self):
        return '{}: {}'.format(self.path, self.counts())

    __repr__ = __str__


def _patterns(allow_mismatch):
    if not allow_mismatch:
        return []
    if isinstance(allow_mismatch, (str, re.Pattern)):
        allow_mismatch = [allow_mismatch]
    return [re.compile(p) for p in allow_mismatch]


def _emitter(log):
    """`log`: a logger (or anything with info/warning), a callable taking one
    line, or None for the toolkit's logger."""
    log = logger if log is None else log
    if hasattr(log, 'warning') and hasattr(log, 'info'):
        return log.info, log.warning
    return log, log


def _fmt_mismatch(key, shapes):
    return '{} {} in model vs {} in file'.format(key, *shapes)


def load_weights(model, path_or_url, *, allow_mismatch=(), log=None,
                 partial=False, prefix='', cache_dir=None):
    """Load a checkpoint into `model` and return a LoadReport.

    `path_or_url`: a ``.pdparams`` file, a path without the suffix
    (``output/x/model_final``) or a URL (see ``resolve_weights``).
    Keys whose shapes differ and that match one of the `allow_mismatch`
    regular expressions (e.g. ``HEAD_KEYS`` for another class count) keep the
    model's initialisation and are reported, one warning line per pattern
    with the keys and both shapes. Any other missing, unexpected or
    shape-mismatched key raises WeightsMismatchError naming the file, the
    counts and the first keys; nothing is loaded then.

    `partial=True` accepts a checkpoint covering only part of the model (an
    ImageNet backbone): missing and unexpected keys are reported, not errors.
    `prefix` is prepended to the file's keys (``'backbone.'``).
    """
    path = resolve_weights(path_or_url, cache_dir)
    return _apply(model, read_state_dict(path), path, allow_mismatch, log,
                  partial, prefix)


def _apply(model, state, path, allow_mismatch, log, partial, prefix):
    info, warn = _emitter(log)
    state = {prefix + k: v for k, v in state.items()}
    own = model.state_dict()
    pats = _patterns(allow_mismatch)

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = {k: (_shape(own[k]), _shape(state[k])) for k in own
                  if k in state and _shape(own[k]) != _shape(state[k])}
    matched = [k for k in own if k in state and k not in mismatched]
    groups = {p.pattern: [k for k in mismatched if p.search(k)] for p in pats}
    kept = sorted({k for ks in groups.values() for k in ks})
    report = LoadReport(path, matched, missing, unexpected, mismatched, kept)

    bad = [_fmt_mismatch(k, v) for k, v in mismatched.items() if k not in kept]
    if not partial:
        bad += ['{} {} in model, missing from file'.format(k, _shape(own[k]))
                for k in missing]
        bad += ['{} {} in file, not in model'.format(k, _shape(state[k]))
                for k in unexpected]
    if bad or not matched:
        hint = ''
        others = [k for k in mismatched if k not in kept]
        if not matched:
            hint = ' No key matches: model keys look like {}; file keys ' \
                'like {}.'.format(', '.join(list(own)[:2]),
                                  ', '.join(list(state)[:2]))
        elif all(re.search(HEAD_KEYS, k) for k in others) \
                and not (missing or unexpected) and not partial:
            hint = ' Only the class-dependent head differs: a checkpoint ' \
                'for another number of classes? Use it as pretraining ' \
                '(--pretrained / pretrain_weights), which keeps those ' \
                'layers at their initialisation and lists them.'
        raise WeightsMismatchError(
            'weights file {} does not fit the model ({}; {} not allowed): '
            '{}{}.{}'.format(
                path, report.counts(), len(bad), '; '.join(bad[:_SHOW]),
                ' ... and {} more'.format(len(bad) - _SHOW)
                if len(bad) > _SHOW else '', hint))

    for k in matched:
        target, value = own[k], state[k]
        if isinstance(value, paddle.Tensor):
            value = value.numpy()
        want = convert_dtype(target.dtype)
        if str(value.dtype) != want:  # e.g. a float16 release
            value = value.astype(want)
        target.set_value(value)

    info('Loaded weights {}'.format(report))
    for pattern, keys in groups.items():
        if keys:
            warn('{}: kept the model\'s initialisation for {} key(s) matching '
                 '/{}/ whose shapes differ (another class count?): {}'.format(
                     os.path.basename(path), len(keys), pattern, ', '.join(
                         _fmt_mismatch(k, mismatched[k]) for k in keys)))
    if partial and (missing or unexpected):
        info('{}: {} model key(s) not in the file keep their initialisation '
             '(first: {}); {} file key(s) unused{}'.format(
                 os.path.basename(path), len(missing),
                 ', '.join(missing[:3]) or '-', len(unexpected),
                 ' (first: {})'.format(', '.join(unexpected[:3]))
                 if unexpected else ''))
    return report


def load_pretrain(model, path_or_url, *, log=None):
    """``pretrain_weights`` / ``--pretrained``: either a checkpoint of the
    same architecture, possibly trained on other classes (the class-dependent
    head keeps its initialisation and is reported), or an ImageNet backbone
    checkpoint as in PaddleDetection's ``pretrain_weights`` URLs (its keys
    lack the ``backbone.`` prefix; neck and head keep their initialisation).
    """
    if not path_or_url:
        return None
    path = resolve_weights(path_or_url)
    state = read_state_dict(path)
    own = set(model.state_dict())
    if not set(state) & own and {'backbone.' + k for k in state} & own:
        return _apply(model, state, path, (), log, partial=True,
                      prefix='backbone.')
    return _apply(model, state, path, HEAD_KEYS, log, partial=False,
                  prefix='')
