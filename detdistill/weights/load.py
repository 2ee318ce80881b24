"""Loading weights into a model, with a report.

ppdet calls ``warnings.filterwarnings("ignore")`` at import, which hides
Paddle's "Skip loading for ..." warnings: an 80-class COCO checkpoint loaded
into a 20-class VOC model would silently leave the head random. Every load
here compares names and shapes itself and reports matched, missing,
unexpected and shape-mismatched keys; anything not explicitly allowed is an
error naming the file.
"""
import os
import re

import paddle
from paddle.base.data_feeder import convert_dtype

from ..logger import get_logger
from .download import resolve_weights
from ..errors import WeightsMismatchError
from .formats import read_weights

__all__ = ['HEAD_KEYS', 'LoadReport', 'load_weights', 'load_pretrain']

logger = get_logger()

# Class-count-dependent layers of every ppdet YOLOv3 and GFL: kept at their
# initialisation, with a report, when a checkpoint trained on another dataset
# is loaded as pretraining.
HEAD_KEYS = r'yolo_head\.yolo_output\.|^head\.gfl_head_cls\.'
_SHOW = 6  # keys listed in an error message


def _shape(v):
    return [int(d) for d in v.shape]


class LoadReport:
    """What a load did. `mismatched` maps key -> (model shape, file shape);
    `kept` lists the keys that kept the model's initialisation because an
    `allow_mismatch` pattern allowed it; `skipped` the file's tensors left
    out on purpose (a 0.5 archive's optimizer state); `source` says what
    kind of file it was."""

    def __init__(self, path, matched, missing, unexpected, mismatched, kept,
                 skipped=(), source=''):
        self.path, self.matched = path, matched
        self.missing, self.unexpected = missing, unexpected
        self.mismatched, self.kept = mismatched, kept
        self.skipped, self.source = list(skipped), source

    @property
    def complete(self):
        """Every model key was loaded from the file and every file key used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def counts(self):
        return '{} matched, {} missing, {} unexpected, {} shape-mismatched{}' \
            .format(len(self.matched), len(self.missing),
                    len(self.unexpected), len(self.mismatched),
                    ', {} optimizer-state tensors skipped'.format(
                        len(self.skipped)) if self.skipped else '')

    def __str__(self):
        return '{}{}: {}'.format(self.path, ' ({})'.format(self.source)
                                 if self.source else '', self.counts())

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


def _fmt_mismatch(key, shapes, file_name=None):
    return '{} {} in model vs {} in file{}'.format(
        key, *shapes, _as_in_file(key, file_name))


def _as_in_file(key, file_name):
    name = file_name(key) if file_name else None
    return ' (as {})'.format(name) if name and name != key else ''


def load_weights(model, path_or_url, *, allow_mismatch=(), log=None,
                 partial=False, prefix='', cache_dir=None):
    """Load a checkpoint into `model` and return a LoadReport.

    `path_or_url`: a ``.pdparams`` file, a path without the suffix
    (``output/x/model_final``), a PaddleDetection 0.5 archive (``.tar``,
    ``.tar.gz`` or its extracted folder; renamed to 2.x names, its optimizer
    state skipped and reported) or a URL (see ``resolve_weights``).
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
    contents = read_weights(resolve_weights(path_or_url, cache_dir))
    return _apply(model, contents, allow_mismatch, log, partial, prefix)


def _apply(model, contents, allow_mismatch, log, partial, prefix):
    """Compare `contents` (a formats.read_weights record) with `model`,
    refuse what is not allowed, load the rest, report."""
    info, warn = _emitter(log)
    path, file_name = contents.path, contents.file_name
    state = {prefix + k: v for k, v in contents.state.items()}
    own = model.state_dict()
    pats = _patterns(allow_mismatch)

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = {k: (_shape(own[k]), _shape(state[k])) for k in own
                  if k in state and _shape(own[k]) != _shape(state[k])}
    matched = [k for k in own if k in state and k not in mismatched]
    groups = {p.pattern: [k for k in mismatched if p.search(k)] for p in pats}
    kept = sorted({k for ks in groups.values() for k in ks})
    report = LoadReport(path, matched, missing, unexpected, mismatched, kept,
                        contents.skipped, contents.describe())

    bad = [_fmt_mismatch(k, v, file_name) for k, v in mismatched.items()
           if k not in kept]
    if not partial:
        bad += ['{} {} in model, missing from file{}'.format(
            k, _shape(own[k]), _as_in_file(k, file_name)) for k in missing]
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
                         _fmt_mismatch(k, mismatched[k], file_name)
                         for k in keys)))
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
    checkpoint, whose neck and head keep their initialisation: a 2.x one as
    in PaddleDetection's ``pretrain_weights`` URLs (keys without the
    ``backbone.`` prefix) or a 0.5 one (``ResNet34_pretrained.tar``, whose
    names map to ``backbone.`` keys only).
    """
    if not path_or_url:
        return None
    contents = read_weights(resolve_weights(path_or_url))
    state, own = set(contents.state), set(model.state_dict())
    if not state & own and {'backbone.' + k for k in state} & own:
        return _apply(model, contents, (), log, partial=True,
                      prefix='backbone.')
    if state & own and all(k.startswith('backbone.') for k in state & own) \
            and not any(k.startswith(('neck.', 'yolo_head.', 'head.'))
                        for k in state):
        return _apply(model, contents, (), log, partial=True, prefix='')
    return _apply(model, contents, HEAD_KEYS, log, partial=False, prefix='')
