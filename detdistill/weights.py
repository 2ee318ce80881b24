"""Loading weights with a report, from a path or a URL.

ppdet calls warnings.filterwarnings("ignore") at import, which hides Paddle's
"Skip loading for ..." warnings: an 80-class COCO checkpoint loaded into a
20-class VOC model silently leaves the head random. Every load here lists
matched, missing, unexpected and shape-mismatched keys itself, and anything
not explicitly allowed is an error naming the file.
"""
import hashlib
import os
import pickle
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request

import paddle

from .logger import get_logger

__all__ = ['WeightsMismatchError', 'WeightsDownloadError', 'LoadReport',
           'resolve_weights', 'read_state_dict', 'load_weights',
           'load_pretrain', 'HEAD_KEYS']

logger = get_logger()
# Class-count-dependent layers: re-initialised, with a report, when a
# checkpoint for another dataset is loaded as pretraining.
HEAD_KEYS = r'yolo_head\.yolo_output\.'


class WeightsMismatchError(ValueError):
    pass


class WeightsDownloadError(RuntimeError):
    pass


def cache_dir():
    return os.environ.get('DETDISTILL_CACHE', os.path.join(
        os.path.expanduser('~'), '.cache', 'detdistill', 'weights'))


def _digest(path, algo):
    h = hashlib.new(algo)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _download(url, dest, timeout=30):
    tmp = '{}.part{}'.format(dest, os.getpid())
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, \
                open(tmp, 'wb') as f:
            total = int(r.headers.get('Content-Length') or 0)
            done = 0
            for chunk in iter(lambda: r.read(1 << 20), b''):
                f.write(chunk)
                done += len(chunk)
                if total and sys.stderr.isatty():
                    sys.stderr.write('\rdownloading {}: {:.0%}'.format(
                        os.path.basename(dest), done / total))
    except (urllib.error.URLError, OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        reason = getattr(e, 'reason', e)
        raise WeightsDownloadError('cannot download {}: {}'.format(
            url, reason)) from None
    os.replace(tmp, dest)


def resolve_weights(path_or_url, sha256=None):
    """A local path (PaddleDetection style, `.pdparams` optional) or a URL,
    downloaded once into the cache and re-used. A checksum can be given as an
    argument or a URL fragment `#sha256=...`; it is checked on download and
    recorded beside the file."""
    parsed = urllib.parse.urlparse(str(path_or_url))
    if parsed.scheme not in ('http', 'https', 'file'):
        path = str(path_or_url)
        for cand in (path, path + '.pdparams'):
            if os.path.isfile(cand):
                return cand
        raise FileNotFoundError('weights file {} does not exist'.format(
            path if path.endswith('.pdparams') else path + '[.pdparams]'))
    frag = dict(urllib.parse.parse_qsl(parsed.fragment))
    sha256 = sha256 or frag.get('sha256')
    url = urllib.parse.urlunparse(parsed._replace(fragment=''))
    name = os.path.basename(parsed.path) or 'weights'
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    dest = os.path.join(cache_dir(), key, name)
    if not os.path.isfile(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        logger.info('Downloading {} to {}'.format(url, dest))
        if parsed.scheme == 'file':
            src = urllib.request.url2pathname(parsed.path)
            if not os.path.isfile(src):
                raise WeightsDownloadError('cannot download {}: no such '
                                           'file'.format(url))
            shutil.copyfile(src, dest + '.part')
            os.replace(dest + '.part', dest)
        else:
            _download(url, dest)
        actual = _digest(dest, 'sha256')
        if sha256 and actual != sha256.lower():
            os.remove(dest)
            raise WeightsDownloadError(
                'checksum mismatch for {}: expected sha256 {}, got {}'.format(
                    url, sha256, actual))
        with open(dest + '.sha256', 'w') as f:
            f.write(actual + '\n')
    else:
        recorded = dest + '.sha256'
        if os.path.isfile(recorded):
            with open(recorded) as f:
                want = f.read().strip()
            if _digest(dest, 'sha256') != want:
                os.remove(dest)
                raise WeightsDownloadError(
                    'cached copy of {} is corrupt (sha256 differs from the '
                    'recorded one); it was removed, run again to '
                    're-download'.format(url))
    return dest


def read_state_dict(path):
    """A `.pdparams` state dict; our `.pdopt`-style nesting ({'model': ...})
    is unwrapped. Unreadable files raise naming the file. (Static-era
    PaddleDetection tar archives will get a reader of their own here.)"""
    try:
        state = paddle.load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, OSError,
            RuntimeError) as e:
        raise WeightsMismatchError('cannot read weights file {}: {} (is it '
                                   'truncated or not a .pdparams?)'.format(
                                       path, e)) from None
    if isinstance(state, dict) and 'model' in state and \
            isinstance(state['model'], dict):
        state = state['model']
    if not isinstance(state, dict) or not state:
        raise WeightsMismatchError('{} holds no state dict'.format(path))
    return state


class LoadReport:
    def __init__(self, path, matched, missing, unexpected, mismatched):
        self.path, self.matched = path, matched
        self.missing, self.unexpected = missing, unexpected
        self.mismatched = mismatched  # {key: (model shape, file shape)}

    def __str__(self):
        return '{}: {} matched, {} missing, {} unexpected, {} shape ' \
            'mismatched'.format(self.path, len(self.matched),
                                len(self.missing), len(self.unexpected),
                                len(self.mismatched))


def _shape(v):
    return list(v.shape)


def load_weights(model, path_or_url, allow_mismatch=None,
                 partial=False, prefix=''):
    """Load what matches; keys matching the regex `allow_mismatch` may differ
    in shape or be missing (they keep the model's initialisation and are
    reported). `partial=True` accepts a checkpoint that covers only part of
    the model (an ImageNet backbone: missing and extra keys are reported).
    Anything else is an error."""
    path = resolve_weights(path_or_url)
    state = {prefix + k: v for k, v in read_state_dict(path).items()}
    own = model.state_dict()
    ok = re.compile(allow_mismatch).search if allow_mismatch else \
        (lambda k: False)
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = {k: (_shape(own[k]), _shape(state[k])) for k in own
                  if k in state and _shape(own[k]) != _shape(state[k])}
    matched = [k for k in own if k in state and k not in mismatched]
    report = LoadReport(path, matched, missing, unexpected, mismatched)
    errors = ['{} {} in model vs {} in file'.format(k, *v)
              for k, v in mismatched.items() if not ok(k)]
    if not partial:
        errors += ['{} missing from file'.format(k) for k in missing
                   if not ok(k)]
        errors += ['{} in file but not in model'.format(k)
                   for k in unexpected if not ok(k)]
    if errors or not matched:
        raise WeightsMismatchError(
            'weights {} do not match the model ({}); {}{}'.format(
                path, report, '; '.join(errors[:6]) or 'no key matched',
                ' ... and {} more'.format(len(errors) - 6)
                if len(errors) > 6 else ''))
    # Keys not loaded keep the model's own values (no "Skip loading" noise).
    model.set_state_dict(dict(own, **{k: state[k] for k in matched}))
    logger.info('Loaded weights {}'.format(report))
    kept = sorted(set(mismatched) | {k for k in missing if ok(k)})
    if kept:
        logger.warning('Kept the initialisation of {} layer(s) that do not '
                       'fit (class count differs?): {}'.format(
                           len(kept), ', '.join('{} {}'.format(
                               k, mismatched.get(k, 'missing'))
                               for k in kept)))
    if partial and (missing or unexpected):
        logger.info('{} model keys were not in the file (initialised as '
                    'built); {} file keys were not used'.format(
                        len(missing), len(unexpected)))
    return report


def load_pretrain(model, path_or_url):
    """`pretrain_weights` / `--pretrained`: a checkpoint of the same
    architecture, possibly trained on other classes (the head is
    re-initialised and reported)."""
    if not path_or_url:
        return None
    keys = set(read_state_dict(resolve_weights(path_or_url)))
    own = set(model.state_dict())
    if not keys & own and {'backbone.' + k for k in keys} & own:
        # An ImageNet backbone checkpoint (PaddleDetection's pretrain_weights
        # URLs): its keys lack the 'backbone.' prefix; neck and head start
        # from their initialisation.
        return load_weights(model, path_or_url, partial=True,
                            prefix='backbone.')
    return load_weights(model, path_or_url, allow_mismatch=HEAD_KEYS)
