"""The `Distill:` block of a student config, read and checked in one place.

    Distill:
      losses:                  # one entry per loss, under a name of your
        l2:                    # choice; `type` defaults to that name
          type: l2             # l2 | fine_grained | kl | ld (head outputs),
                               # mimic | cwd | pkd | mgd | fgd (features),
                               # or a registered loss class
          weight: auto         # a number, or auto: weighed so that the
                               # term equals `ratio` x the detection loss
          ratio: 1.0           # (auto only) default 1
                               # default weight: the loss's own
                               # (DEFAULT_WEIGHTS)
          pairs: [[student_layer, teacher_layer], ...]  # default: the
                               # loss's own (a GFL loss: {reg: [...], cls:
                               # [...]})
          obj_target: soft     # any other key: an option of the loss class
        cwd:                   # a feature loss: by default the necks'
          weight: 5            # outputs, paired by stride (teacher of
          temperature: 1.0     # another head family included)
          connector:           # feature losses only: the student's map ->
            bn: false          # the teacher's channels (1x1 conv, + BN,
            relu: false        # + ReLU) where they differ, and its size
            interpolation: bilinear  # (bilinear | nearest) where it
                               # differs; trained with the student, saved
                               # in the .pdopt, never in the .pdparams
      teacher:
        compile: auto          # Paddle Inference + oneDNN forward on CPU
        cache: auto            # one forward per distinct training image
        cache_mb: 1024
        precision: float32     # float32 | float16 | bfloat16
        emulate_precision: false  # round to `precision` in float32
      unlabeled:
        list: null             # images without labels, one path per line,
        dir: null              # relative to TrainDataset.dataset_dir
        batch_size: null       # default: TrainReader.batch_size
        weight: 1.0            # x each loss's weight on unlabeled images
      check:                   # at start: the teacher's mAP on the eval set
        enabled: true
        baseline: null         # the student trained alone (a tools/train.py
                               # output folder, or weights), to compare with
        margin: 1.0            # warn below this many mAP points of margin

Several entries are summed, each with its own weight, e.g. L2 on the head
outputs plus CWD on the neck's: `losses: {l2: {weight: auto}, cwd:
{weight: 5}}`.

Without `losses` the run distils with L2 (`use_fine_grained_loss: true`,
PaddleDetection's own switch, picks the fine-grained loss instead). From
the command line: `-o Distill.losses.l2.weight=10`,
`-o Distill.losses.kl.temperature=2`, `-o Distill.teacher.cache=false`.

The flat keys of earlier versions (`distill_loss`, `distill_loss_weight`,
`teacher_cache`, ..., and loss class blocks such as `FineGrainedDistill:
{obj_target: soft}`) still work: each is translated here, with a one-line
notice naming its new place.
"""
import copy
import difflib

from ..errors import ConfigError

__all__ = ['DEFAULTS', 'LOSS_TYPES', 'DEFAULT_WEIGHTS', 'DEPRECATED',
           'CONNECTOR', 'LossEntry', 'DistillSettings', 'distill_settings',
           'loss_class_name']

# Every setting and its default; `losses: None` means the default loss.
DEFAULTS = {
    'losses': None,
    'teacher': {'compile': 'auto', 'cache': 'auto', 'cache_mb': 1024,
                'precision': 'float32', 'emulate_precision': False},
    'unlabeled': {'list': None, 'dir': None, 'batch_size': None,
                  'weight': 1.0},
    'check': {'enabled': True, 'baseline': None, 'margin': 1.0},
}
DEFAULT_LOSS = 'l2'
LOSS_TYPES = {'l2': 'L2Distill', 'fine_grained': 'FineGrainedDistill',
              'kl': 'KLDistill', 'ld': 'LDDistill', 'mimic': 'MimicDistill',
              'cwd': 'CWDDistill', 'pkd': 'PKDDistill', 'mgd': 'MGDDistill',
              'fgd': 'FGDDistill'}
# L2 weighs itself against the detection loss (`auto`): a constant weight
# that suits one dataset drowned the detection loss on another and left the
# student below normal training (README, results). Fine-grained keeps
# PaddleDetection's DistillYOLOv3Loss weight, 1000, so that the blog's
# `use_fine_grained_loss: true` means what it meant; KL takes that weight
# too (its terms are means over the same cells). PaddleDetection's VOC L2
# recipe is `weight: 100`. The feature losses weigh themselves too: their
# sizes span orders of magnitude with the maps' channels and sizes (MGD sums
# over C x H x W: its paper's weight is 2e-5), so no constant suits every
# model. Other losses: 1 (LDDistill weighs its components itself).
DEFAULT_WEIGHTS = {'L2Distill': 'auto', 'FineGrainedDistill': 1000.,
                   'KLDistill': 1000., 'MimicDistill': 'auto',
                   'CWDDistill': 'auto', 'PKDDistill': 'auto',
                   'MGDDistill': 'auto', 'FGDDistill': 'auto'}
DEFAULT_RATIO = 1.0
# A feature loss entry's `connector:` (connectors.py).
CONNECTOR = {'bn': False, 'relu': False, 'interpolation': 'bilinear'}
INTERPOLATIONS = ('bilinear', 'nearest')
PRECISIONS = ('float32', 'float16', 'bfloat16')
# flat key of earlier versions -> its place in the Distill block; the loss
# keys go to the one loss entry (ambiguous with several: an error)
DEPRECATED = {
    'distill_loss': 'losses.<name>',
    'distill_loss_weight': 'losses.<name>.weight',
    'distill_pairs': 'losses.<name>.pairs',
    'temperature': 'losses.<name>.temperature',
    'teacher_cache': 'teacher.cache',
    'teacher_cache_mb': 'teacher.cache_mb',
    'teacher_compile': 'teacher.compile',
    'teacher_precision': 'teacher.precision',
    'unlabeled_list': 'unlabeled.list',
    'unlabeled_dir': 'unlabeled.dir',
    'unlabeled_batch_size': 'unlabeled.batch_size',
    'unlabeled_distill_weight': 'unlabeled.weight',
}


def loss_class_name(type_):
    """'l2' -> 'L2Distill'; a class name stays itself."""
    return LOSS_TYPES.get(type_, type_)


class LossEntry:
    """One entry of `Distill.losses`: its name (a prefix of its logged
    components when there are several), the loss class name, the weight (a
    float, or 'auto' with its `ratio`), the pairs (None: the loss's own),
    the class's options, and the connector options (every key of
    CONNECTOR; `connector_declared`: the entry has a `connector` key, an
    error for a loss without connectors)."""

    def __init__(self, name, type_, weight, pairs, options, ratio=None,
                 connector=None, connector_declared=False):
        self.name, self.type, self.weight = name, type_, weight
        self.pairs, self.options, self.ratio = pairs, options, ratio
        self.connector = dict(CONNECTOR, **(connector or {}))
        self.connector_declared = connector_declared

    def __repr__(self):
        return ('LossEntry({!r}, {}, weight={}, pairs={}, options={}, '
                'connector={})'.format(self.name, self.type,
                                       self.describe_weight(), self.pairs,
                                       self.options, self.connector))

    def describe_weight(self):
        if self.weight == 'auto':
            return 'auto (ratio {:g} of the detection loss)'.format(
                self.ratio)
        return '{:g}'.format(self.weight)


class DistillSettings:
    """The resolved block: `losses` (LossEntry list), `teacher`,
    `unlabeled` and `check` (dicts with every key of DEFAULTS), and
    `notices` (one line per deprecated key that was translated)."""

    def __init__(self, losses, teacher, unlabeled, check, notices):
        self.losses, self.teacher, self.unlabeled = losses, teacher, unlabeled
        self.check, self.notices = check, notices

    @property
    def has_unlabeled(self):
        return bool(self.unlabeled['list'] or self.unlabeled['dir'])


def _check_known(block, known, where):
    for key in block:
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            raise ConfigError("unknown key '{}.{}'{}".format(
                where, key, " (did you mean '{}.{}'?)".format(where, hint[0])
                if hint else ''))


def _losses(cfg, block, flat):
    """Distill.losses, or the loss `distill_loss` / `use_fine_grained_loss`
    asks for, or the default; then the deprecated keys of one entry and the
    loss class blocks."""
    losses = block.get('losses')
    if 'distill_loss' in flat:
        if losses:
            raise ConfigError('distill_loss={} and Distill.losses both choose '
                              'the loss: set one of them'.format(
                                  flat['distill_loss']))
        losses = {flat['distill_loss']: {}}
    if cfg.get('use_fine_grained_loss'):  # PaddleDetection's own switch
        types = {loss_class_name((e or {}).get('type', n))
                 for n, e in (losses or {}).items()}
        if types - {'FineGrainedDistill'}:
            raise ConfigError(
                'use_fine_grained_loss=true asks for the fine-grained loss '
                'but the config asks for {}: set one of them'.format(
                    ', '.join(sorted(types))))
        losses = losses or {'fine_grained': {}}
    losses = {n: dict(e or {}) for n, e in (losses or {DEFAULT_LOSS: {}})
              .items()}
    for key, sub in (('distill_loss_weight', 'weight'),
                     ('distill_pairs', 'pairs'),
                     ('temperature', 'temperature')):
        if key in flat:
            if len(losses) > 1:
                raise ConfigError('{} sets one loss, but Distill.losses lists '
                                  '{}: set {} in each entry'.format(
                                      key, ', '.join(losses), sub))
            next(iter(losses.values()))[sub] = flat[key]
    for entry_name, entry in losses.items():
        cls = loss_class_name(entry.get('type', entry_name))
        if isinstance(cfg.get(cls), dict):  # `FineGrainedDistill: {...}`
            losses[entry_name] = dict(cfg[cls], **entry)
    return losses


def _entries(losses):
    out = []
    for name, entry in losses.items():
        entry = dict(entry or {})
        if not isinstance(name, str):
            raise ConfigError('Distill.losses: entry names must be strings, '
                              'got {!r}'.format(name))
        type_ = loss_class_name(entry.pop('type', name))
        if type_ == name and name not in LOSS_TYPES.values():
            raise ConfigError(
                "Distill.losses.{}: no type, and '{}' is not a loss ({}, or "
                "a registered loss class): set type".format(
                    name, name, ', '.join(LOSS_TYPES)))
        weight = entry.pop('weight', DEFAULT_WEIGHTS.get(type_, 1.))
        ratio = entry.pop('ratio', None)
        if weight != 'auto' and (
                isinstance(weight, bool) or
                not isinstance(weight, (int, float)) or
                not 0 <= weight < float('inf')):
            raise ConfigError('Distill.losses.{}.weight must be a number >= '
                              '0 or auto, got {!r}'.format(name, weight))
        if ratio is not None and weight != 'auto':
            raise ConfigError('Distill.losses.{}.ratio applies to weight: '
                              'auto only (weight is {})'.format(name, weight))
        if weight == 'auto':
            ratio = DEFAULT_RATIO if ratio is None else ratio
            if isinstance(ratio, bool) or not isinstance(
                    ratio, (int, float)) or not 0 < ratio < float('inf'):
                raise ConfigError('Distill.losses.{}.ratio must be a number '
                                  '> 0, got {!r}'.format(name, ratio))
            ratio = float(ratio)
        else:
            weight = float(weight)
        pairs = entry.pop('pairs', None)
        declared = 'connector' in entry
        connector = _connector(entry.pop('connector', None), name)
        out.append(LossEntry(name, type_, weight, pairs, entry, ratio,
                             connector, declared))
    if not out:
        raise ConfigError('Distill.losses is empty: list at least one loss')
    return out


def _connector(block, name):
    """An entry's `connector:` over CONNECTOR, checked."""
    where = 'Distill.losses.{}.connector'.format(name)
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError('{} must be a mapping (bn, relu, interpolation), '
                          'got {!r}'.format(where, block))
    _check_known(block, CONNECTOR, where)
    c = dict(CONNECTOR, **block)
    for key in ('bn', 'relu'):
        if c[key] not in (True, False):
            raise ConfigError('{}.{} must be true or false, got {!r}'.format(
                where, key, c[key]))
    if c['interpolation'] not in INTERPOLATIONS:
        raise ConfigError('{}.interpolation must be one of {}, got {!r}'
                          .format(where, ', '.join(INTERPOLATIONS),
                                  c['interpolation']))
    return c


def _teacher(block):
    t = dict(DEFAULTS['teacher'], **(block or {}))
    _check_known(block or {}, DEFAULTS['teacher'], 'Distill.teacher')
    for key in ('compile', 'cache'):
        if t[key] not in ('auto', True, False):
            raise ConfigError('Distill.teacher.{} must be auto, true or '
                              'false, got {!r}'.format(key, t[key]))
    mb = t['cache_mb']
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or mb <= 0:
        raise ConfigError('Distill.teacher.cache_mb must be a number > 0, '
                          'got {!r}'.format(mb))
    if t['precision'] not in PRECISIONS:
        raise ConfigError('Distill.teacher.precision must be one of {}, got '
                          '{!r}'.format(', '.join(PRECISIONS), t['precision']))
    if t['emulate_precision'] not in (True, False):
        raise ConfigError('Distill.teacher.emulate_precision must be true or '
                          'false, got {!r}'.format(t['emulate_precision']))
    return t


def _unlabeled(block):
    u = dict(DEFAULTS['unlabeled'], **(block or {}))
    _check_known(block or {}, DEFAULTS['unlabeled'], 'Distill.unlabeled')
    w = u['weight']
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise ConfigError('Distill.unlabeled.weight must be a number >= 0, '
                          'got {!r}'.format(w))
    size = u['batch_size']
    if size is not None and (isinstance(size, bool) or
                             not isinstance(size, int) or size < 1):
        raise ConfigError('Distill.unlabeled.batch_size must be a positive '
                          'integer, got {!r}'.format(size))
    return u


def _check(block):
    c = dict(DEFAULTS['check'], **(block or {}))
    _check_known(block or {}, DEFAULTS['check'], 'Distill.check')
    if c['enabled'] not in (True, False):
        raise ConfigError('Distill.check.enabled must be true or false, got '
                          '{!r}'.format(c['enabled']))
    if c['baseline'] is not None and not isinstance(c['baseline'], str):
        raise ConfigError('Distill.check.baseline must be a path, got '
                          '{!r}'.format(c['baseline']))
    m = c['margin']
    if isinstance(m, bool) or not isinstance(m, (int, float)):
        raise ConfigError('Distill.check.margin must be a number (mAP '
                          'points), got {!r}'.format(m))
    return c


def distill_settings(cfg):
    """The DistillSettings of the student config `cfg` (a load_config dict):
    the Distill block over DEFAULTS, deprecated keys translated, every value
    checked; ConfigError names the key of any problem."""
    block = cfg.get('Distill') or {}
    if not isinstance(block, dict):
        raise ConfigError('Distill must be a mapping, got {!r}'.format(block))
    _check_known(block, DEFAULTS, 'Distill')
    block = copy.deepcopy(block)
    losses = block.get('losses')
    if losses is not None and not isinstance(losses, dict):
        raise ConfigError('Distill.losses must map entry names to losses, '
                          'e.g. {{l2: {{weight: 10}}}}; got {!r}'.format(
                              losses))
    flat = {k: cfg[k] for k in DEPRECATED if cfg.get(k) is not None}
    notices = ["config key '{}' is deprecated: use Distill.{} (applied)"
               .format(k, DEPRECATED[k]) for k in flat]
    notices += ['config block {} is deprecated: use Distill.losses.<name>.'
                '<option> (applied)'.format(c) for c in LOSS_TYPES.values()
                if isinstance(cfg.get(c), dict)]
    losses = _losses(cfg, block, flat)
    for key, value in flat.items():
        if DEPRECATED[key].startswith('losses'):
            continue
        section, sub = DEPRECATED[key].split('.')
        if key == 'teacher_precision' and str(value).endswith('_emulated'):
            value = value[:-len('_emulated')]
            block.setdefault('teacher', {})['emulate_precision'] = True
        block.setdefault(section, {})[sub] = value
    return DistillSettings(_entries(losses), _teacher(block.get('teacher')),
                           _unlabeled(block.get('unlabeled')),
                           _check(block.get('check')), notices)
