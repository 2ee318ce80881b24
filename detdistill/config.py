"""Configs: PaddleDetection YAML (`_BASE_` inheritance, `-o key=value`
overrides), kept apart per model.

ppdet's `load_config` merges every file into one global dict, so loading the
teacher's config after the student's silently overwrites the student's settings
(PaddleDetection issue #5976). Here a config is a plain dict of its own;
`activate(cfg)` installs it into ppdet's workspace only while components are
built from it.
"""
import contextlib
import copy
import difflib
import os

import yaml
from ppdet.core import workspace
from ppdet.core.config.schema import SchemaDict

from .distill.settings import DEPRECATED
from .errors import ConfigError

__all__ = ['ConfigError', 'load_config', 'parse_overrides', 'activate',
           'build_model']

# Top-level keys our tools read that ppdet's registered modules don't declare.
KNOWN_KEYS = {
    # PaddleDetection runtime / training keys
    'architecture', 'pretrain_weights', 'weights', 'norm_type', 'num_classes',
    'metric', 'map_type', 'use_gpu',
    'classwise',  # honoured: tools/eval.py always prints per-class AP
    'log_iter', 'save_dir', 'snapshot_epoch',
    'epoch', 'export', 'worker_num', 'filename', 'use_vdl', 'vdl_log_dir',
    'amp', 'amp_level', 'init_loss_scaling', 'find_unused_parameters',
    'use_ema', 'ema_decay', 'ema_decay_type', 'seed', 'data_format',
    # distillation (slim/distillation/distill.py): the Distill block and
    # PaddleDetection's switch; the flat keys of earlier versions are read
    # as deprecated aliases (distill/settings.py)
    'Distill', 'use_fine_grained_loss',
} | set(DEPRECATED)
# PaddleDetection keys this toolkit does not implement: accepted only when
# off (runtime.yml lists them), an error when set, so that nobody believes a
# feature is on that is not.
NOT_IMPLEMENTED = {
    'use_xpu': 'only CPU and CUDA GPUs are supported',
    'use_mlu': 'only CPU and CUDA GPUs are supported',
    'use_npu': 'only CPU and CUDA GPUs are supported',
    'use_gcu': 'only CPU and CUDA GPUs are supported',
    'print_flops': 'FLOPs are not counted; remove the key',
    'print_params': 'parameters are not printed; remove the key',
    'to_static': 'the converted distiller computed different losses '
                 '(results/PROFILE.md); training runs eagerly',
}


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError('config file not found: {}'.format(path))
    try:
        with open(path) as f:
            cfg = yaml.load(f, Loader=yaml.Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError('{}: invalid YAML: {}'.format(path, e)) from None
    if not isinstance(cfg, dict):
        raise ConfigError('{}: top level must be a mapping'.format(path))
    return cfg


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def _load_with_base(path):
    cfg = _read_yaml(path)
    merged = {}
    for base in cfg.pop('_BASE_', []):
        base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(path), base)
        _merge(merged, _load_with_base(base))
    return _merge(merged, cfg)


def parse_overrides(items):
    """['a.b=1', 'c=[1, 2]'] -> {'a': {'b': 1}, 'c': [1, 2]} (values as YAML)."""
    out = {}
    for item in items or []:
        if '=' not in item:
            raise ConfigError("override '{}' is not key=value".format(item))
        key, value = item.split('=', 1)
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass  # keep it as the raw string
        node = out
        parts = key.strip().split('.')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


# Keys PaddleDetection keeps once for the whole run (its global config, read
# by every `__shared__` component): an `-o` of one reaches the teacher's
# config too, as in PaddleDetection's distillation; other overrides are the
# student's.
SHARED_KEYS = ('num_classes',)


def shared_overrides(items):
    """The `-o` items (['k=v', ...]) of SHARED_KEYS."""
    return [i for i in items or [] if i.split('=', 1)[0].strip() in
            SHARED_KEYS]


def _check_keys(cfg, overrides, path):
    """Reject override keys that nothing reads: a typo must not train for a day."""
    registered = workspace.get_registered_modules()
    known = KNOWN_KEYS | set(NOT_IMPLEMENTED) | set(registered) | set(cfg)
    for key, value in overrides.items():
        if key not in known:
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError("{}: unknown config key '{}'{}".format(
                path, key, " (did you mean '{}'?)".format(hint[0]) if hint
                else ''))
        # Dataset slots (TrainDataset: {name: VOCDataSet, ...}) take the
        # arguments of the class they name.
        base = cfg.get(key) if isinstance(cfg.get(key), dict) else {}
        slot = value if isinstance(value, dict) else {}
        target = slot.get('name') or base.get('name') or key
        schema = registered.get(target)
        if isinstance(schema, SchemaDict) and isinstance(value, dict):
            for sub in value:
                if sub not in schema.schema and sub != 'name':
                    hint = difflib.get_close_matches(sub, list(schema.schema), 1)
                    raise ConfigError("{}: {} has no argument '{}'{}".format(
                        path, target, sub, " (did you mean '{}'?)"
                        .format(hint[0]) if hint else ''))


def load_config(path, overrides=None):
    """Read `path` with its `_BASE_` files and apply `-o` overrides.

    Returns an independent dict; ppdet's global config is not touched.
    """
    import detdistill  # noqa: F401  registers our components before key checks
    cfg = _load_with_base(path)
    overrides = overrides if isinstance(overrides, dict) else \
        parse_overrides(overrides)
    _check_keys(cfg, overrides, path)
    _merge(cfg, copy.deepcopy(overrides))
    for key, why in NOT_IMPLEMENTED.items():
        if cfg.get(key):
            raise ConfigError('{}: {}: {} is not supported: {}'.format(
                path, key, cfg[key], why))
    cfg['filename'] = os.path.splitext(os.path.basename(path))[0]
    cfg['config_path'] = path
    return cfg


_PRISTINE = None


@contextlib.contextmanager
def activate(cfg):
    """Install `cfg` as ppdet's global config for the block (ppdet's `create`
    reads only that), then restore what was there."""
    global _PRISTINE
    g = workspace.global_config
    if _PRISTINE is None:
        _PRISTINE = {k: v.copy() for k, v in g.items()
                     if isinstance(v, SchemaDict)}
    saved = dict(g)
    g.clear()
    g.update({k: v.copy() for k, v in _PRISTINE.items()})
    workspace.merge_config(copy.deepcopy(cfg))
    try:
        yield g
    finally:
        g.clear()
        g.update(saved)


def build_model(cfg):
    with activate(cfg):
        return workspace.create(cfg['architecture'])
