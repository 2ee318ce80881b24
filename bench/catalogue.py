"""The experiment catalogue (catalogue.yaml): rows, data splits and profiles,
read and checked once. Any problem (an unknown key, a reference to a row or
split that does not exist, a value of the wrong type) is one CatalogueError
naming the key."""
import difflib
import functools
import os
from dataclasses import dataclass, field

import yaml

from detdistill.errors import DetDistillError

from .splits import SPLITS

__all__ = ['CatalogueError', 'Method', 'Profile', 'Catalogue', 'load',
           'catalogue', 'PATH', 'DEFAULT_BASELINE', 'KINDS']

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'catalogue.yaml')
DEFAULT_BASELINE = 'baseline'
KINDS = ('teacher', 'train', 'distill')


class CatalogueError(DetDistillError, ValueError):
    """catalogue.yaml cannot be used as written; names the key."""


@dataclass(frozen=True)
class Method:
    """A row: what it trains (`tool`, `role`: the profile's config) and how
    (`overrides`); the row its gap is measured from; the data split it
    reads; its cost relative to its kind."""
    name: str
    tool: str
    role: str
    overrides: tuple = ()
    baseline: str = DEFAULT_BASELINE
    split: str = None
    cost_scale: float = 1.

    @property
    def kind(self):
        """teacher, train or distill: what a run of it costs like."""
        return 'teacher' if self.role == 'teacher' else self.tool

    @property
    def distills(self):
        return self.tool == 'distill'


@dataclass(frozen=True)
class Profile:
    """A profile: configs, data, rows, output, costs and targets
    (catalogue.yaml documents each key)."""
    name: str
    student: str
    teacher: str
    make_data: tuple
    methods: tuple
    out: str
    budget_min: float
    cost: dict
    opts: tuple = ()
    pinned: str = None
    sweep: tuple = ()
    on_request: tuple = ()
    teacher_from: str = None
    teacher_weights: str = None
    one_teacher: bool = False
    step_method: str = 'l2'
    targets: dict = field(default_factory=dict)
    about: str = ''

    def config(self, role):
        """The config file of a role (student or teacher)."""
        return self.student if role == 'student' else self.teacher

    @property
    def data_name(self):
        """Whose pinned dataset digest applies."""
        return self.pinned or self.name


@dataclass(frozen=True)
class Catalogue:
    methods: dict
    splits: dict
    profiles: dict

    @property
    def teacher(self):
        """The name of the teacher row (there is exactly one)."""
        return next(m.name for m in self.methods.values()
                    if m.role == 'teacher')


# -- value checks: each returns the value as stored or raises, naming `where`

def _fail(where, what, value):
    raise CatalogueError('{}: expected {}, got {!r}'.format(
        where, what, value))


def _text(value, where):
    if not isinstance(value, str) or not value:
        _fail(where, 'a non-empty string', value)
    return value


def _texts(value, where):
    if not isinstance(value, list):
        _fail(where, 'a list of strings', value)
    return tuple(_text(v, '{}[{}]'.format(where, i))
                 for i, v in enumerate(value))


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            value < 0:
        _fail(where, 'a number >= 0', value)
    return value


def _positive(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            value <= 0:
        _fail(where, 'a number > 0', value)
    return value


def _flag(value, where):
    if not isinstance(value, bool):
        _fail(where, 'true or false', value)
    return value


def _one_of(*choices):
    def check(value, where):
        if value not in choices:
            _fail(where, ' or '.join(choices), value)
        return value
    return check


def _mapping(schema, required=()):
    """A mapping whose keys are in `schema` (key -> check)."""
    def check(value, where):
        if not isinstance(value, dict):
            _fail(where, 'a mapping', value)
        for key in value:
            if key not in schema:
                hint = difflib.get_close_matches(str(key), list(schema), 1)
                raise CatalogueError("unknown key '{}.{}'{}".format(
                    where, key, " (did you mean '{}'?)".format(hint[0])
                    if hint else ''))
        for key in required:
            if key not in value:
                raise CatalogueError("{}: '{}' is missing".format(where, key))
        return {k: schema[k](v, '{}.{}'.format(where, k))
                for k, v in value.items()}
    return check


def _row_pairs(value, where):
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in value):
        _fail(where, 'a list of [row, row] pairs', value)
    return tuple((_text(a, where), _text(b, where)) for a, b in value)


_METHOD = _mapping({
    'tool': _one_of('train', 'distill'), 'role': _one_of('student', 'teacher'),
    'overrides': _texts, 'baseline': _text, 'split': _text,
    'cost_scale': _positive}, required=('tool', 'role'))
_SPLIT = _mapping({'note': _text}, required=('note',))
_TARGETS = _mapping({
    'teacher_min': _number, 'teacher_margin': _number,
    'plateau_gain': _number, 'half_gap': _flag,
    'one_seed_spread': _mapping({'spread': _number, 'measured_by': _text},
                                required=('spread', 'measured_by')),
    'pairs': _row_pairs, 'same': _row_pairs})
_PROFILE = _mapping({
    'about': _text, 'student': _text, 'teacher': _text, 'opts': _texts,
    'make_data': _texts, 'pinned': _text, 'methods': _texts, 'sweep': _texts,
    'on_request': _texts, 'out': _text, 'teacher_from': _text,
    'teacher_weights': _text,
    'one_teacher': _flag, 'budget_min': _number,
    'cost': _mapping({k: _positive for k in KINDS}, required=KINDS),
    'step_method': _text, 'targets': _TARGETS},
    required=('student', 'teacher', 'make_data', 'methods', 'out',
              'budget_min', 'cost'))


def _named(value, where):
    """A section: a mapping of names to entries (checked one by one)."""
    if not isinstance(value, dict):
        _fail(where, 'a mapping of names', value)
    return value


_TOP = _mapping({'methods': _named, 'splits': _named, 'profiles': _named},
                required=('methods', 'profiles'))


def _entries(section, check, value):
    """{name: checked mapping} of one top-level section."""
    return {name: check(v, '{}.{}'.format(section, name))
            for name, v in (value or {}).items()}


def _check_references(cat):
    def known(names, table, where, what):
        for n in names:
            if n not in table:
                hint = difflib.get_close_matches(n, list(table), 1)
                raise CatalogueError("{}: no {} '{}'{}".format(
                    where, what, n,
                    " (did you mean '{}'?)".format(hint[0]) if hint else ''))
    known(cat.splits, SPLITS, 'splits', 'writer in bench/splits.py of a '
          'split')
    teachers = [m for m in cat.methods.values() if m.role == 'teacher']
    if len(teachers) != 1 or teachers[0].tool != 'train':
        raise CatalogueError('methods: expected one row with role teacher '
                             'and tool train, got {}'.format(
                                 [m.name for m in teachers]))
    for m in cat.methods.values():
        where = 'methods.' + m.name
        known([m.baseline], cat.methods, where + '.baseline', 'row')
        known([m.split] if m.split else [], cat.splits, where + '.split',
              'split')
    for p in cat.profiles.values():
        where = 'profiles.' + p.name
        for key in ('methods', 'sweep', 'on_request'):
            known(getattr(p, key), cat.methods, '{}.{}'.format(where, key),
                  'row')
        known([p.step_method], cat.methods, where + '.step_method', 'row')
        for key, rows in (('step_method', [p.step_method]),
                          ('sweep', p.sweep)):
            for row in rows:
                if not cat.methods[row].distills:
                    raise CatalogueError('{}.{}: {} does not distill'.format(
                        where, key, row))
        for key in ('pairs', 'same'):
            known([r for pair in p.targets.get(key, ()) for r in pair],
                  cat.methods, '{}.targets.{}'.format(where, key), 'row')


def load(path=PATH):
    """The Catalogue in `path`, checked."""
    try:
        return _read(path)
    except (CatalogueError, yaml.YAMLError) as e:
        raise CatalogueError('{}: {}'.format(path, e)) from None


def _read(path):
    with open(path) as f:
        raw = _TOP(yaml.safe_load(f), 'catalogue')
    methods = {n: Method(n, **v) for n, v in
               _entries('methods', _METHOD, raw['methods']).items()}
    splits = _entries('splits', _SPLIT, raw.get('splits'))
    profiles = {n: Profile(n, **v) for n, v in
                _entries('profiles', _PROFILE, raw['profiles']).items()}
    cat = Catalogue(methods, splits, profiles)
    _check_references(cat)
    return cat


@functools.lru_cache(maxsize=1)
def catalogue():
    """The repository's catalogue, read once."""
    return load()
