"""Is the teacher better than the student it is about to teach, on this
data? Checked when distill.py starts (Distill.check):

- the teacher's mAP on the student's evaluation set, with the teacher's own
  eval transforms; computed once per (weights file, teacher config, eval
  data) and cached in ~/.cache/detdistill/teacher_checks (or
  $DETDISTILL_CHECK_CACHE), so a resumed or repeated run does not pay for
  it again;
- when the student's baseline is known (`baseline`: the output folder of a
  finished tools/train.py run with --eval, or its weights), the two are
  compared: a teacher less than `margin` points above the baseline gets a
  warning with both numbers, since distilling from it can leave the student
  where it was or below (README, results on real photos).

The result is logged and written to teacher_check.json in the run's
output folder.
"""
import hashlib
import json
import os

from ..config import build_model, load_config
from ..engine.callbacks import read_history
from ..errors import ConfigError
from ..fileio import atomic_write
from ..logger import get_logger

__all__ = ['check_teacher', 'baseline_map', 'cache_dir']

logger = get_logger()
MAP = '11point'


def cache_dir():
    return os.environ.get('DETDISTILL_CHECK_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'detdistill', 'teacher_checks')


def _weights_digest(path):
    """sha256 of a weights file; of the names, sizes and times of a
    folder's files (static-era weights are folders)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for folder, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                st = os.stat(os.path.join(folder, name))
                h.update('{} {} {}'.format(os.path.relpath(
                    os.path.join(folder, name), path), st.st_size,
                    st.st_mtime_ns).encode())
        return h.hexdigest()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _eval_data_signature(cfg):
    """The eval list, the label list, and the size and time of every file
    they name: a changed image or annotation is another dataset."""
    ds = cfg['EvalDataset']
    root = ds.get('dataset_dir', '')
    h = hashlib.sha256()
    for name in (ds.get('anno_path'), ds.get('label_list', 'label_list.txt')):
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
            data = f.read()
        h.update(data)
        if name == ds.get('anno_path'):
            for line in data.decode().split('\n'):
                for part in line.split():
                    st = os.stat(os.path.join(root, part))
                    h.update('{} {} {}'.format(part, st.st_size,
                                               st.st_mtime_ns).encode())
    return h.hexdigest()


def _evaluate(cfg, model, what):
    """mAP (percent) of `model` on cfg's EvalDataset."""
    from ..engine import Trainer
    logger.info('Teacher check: evaluating {} on {}'.format(
        what, os.path.join(cfg['EvalDataset'].get('dataset_dir', ''),
                           cfg['EvalDataset']['anno_path'])))
    return 100 * Trainer(cfg, mode='eval', model=model).evaluate()['mAP'][MAP]


def _cached_map(cfg, model, weights, what):
    """The mAP of `model` (loaded from the file `weights`) on cfg's eval
    data, from the cache when this weights file, config and data were
    evaluated before."""
    eval_cfg = {k: cfg.get(k) for k in ('architecture', 'EvalReader',
                                        'EvalDataset', 'num_classes')}
    key = hashlib.sha256(json.dumps(
        [_weights_digest(weights), _eval_data_signature(cfg),
         repr(eval_cfg)],
        sort_keys=True).encode()).hexdigest()[:24]
    path = os.path.join(cache_dir(), key + '.json')
    try:
        with open(path) as f:
            found = json.load(f)
        logger.info('Teacher check: {} on this eval set: mAP {:.2f} (cached '
                    'in {})'.format(what, found['mAP'], path))
        return found['mAP']
    except (OSError, ValueError, KeyError):
        pass
    value = _evaluate(cfg, model, what)
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        atomic_write(path, json.dumps({'mAP': value, 'weights': weights}))
    except OSError as e:  # a read-only home: evaluate again next time
        logger.info('Teacher check: cache not written ({})'.format(e))
    return value


def _prefix_file(path):
    """A weights file from a checkpoint prefix or .pdparams path."""
    for candidate in (path, path + '.pdparams'):
        if os.path.isfile(candidate):
            return candidate
    return None


def baseline_map(cfg, baseline):
    """(student baseline mAP in percent, where it came from) of `baseline`:
    a tools/train.py output folder (the last evaluation in its
    history.jsonl) or weights (a .pdparams file or checkpoint prefix,
    evaluated with the student config `cfg`)."""
    history = os.path.join(baseline, 'history.jsonl')
    if os.path.isdir(baseline):
        evals = [r for r in read_history(history) if r['kind'] == 'eval'] \
            if os.path.isfile(history) else []
        if not evals:
            raise ConfigError(
                'Distill.check.baseline: {} has no evaluation in {} (train '
                'the baseline with tools/train.py --eval, or give its '
                'weights)'.format(baseline, history))
        return 100 * evals[-1]['mAP'][MAP], '{} (step {})'.format(
            history, evals[-1]['step'])
    weights = _prefix_file(baseline)
    if weights is None:
        raise ConfigError('Distill.check.baseline: {} is neither a '
                          'tools/train.py output folder nor weights'.format(
                              baseline))
    from ..weights import load_weights
    model = build_model(cfg)
    load_weights(model, weights)
    return _cached_map(cfg, model, weights, 'the baseline ' + weights), \
        weights


def check_teacher(cfg, teacher_config, teacher, weights, settings,
                  output_dir=None):
    """Log (and return) the teacher's mAP on the student's eval data and,
    with `settings['baseline']`, its margin over the student's baseline;
    warn when that margin is under `settings['margin']` points."""
    tcfg = load_config(teacher_config, [])
    tcfg.update({k: cfg[k] for k in ('EvalDataset', 'num_classes',
                                     'TestDataset') if k in cfg})
    tcfg['filename'] = cfg['filename']
    result = {'teacher_mAP': _cached_map(tcfg, teacher, weights,
                                         'the teacher ' + weights),
              'teacher_weights': weights, 'metric': 'mAP@0.5 ' + MAP}
    line = 'Teacher check: teacher mAP {:.2f}'.format(result['teacher_mAP'])
    if settings.get('baseline'):
        base, source = baseline_map(cfg, settings['baseline'])
        margin = result['teacher_mAP'] - base
        result.update(baseline_mAP=base, baseline_from=source,
                      margin=margin, clearly_better=margin >= settings[
                          'margin'])
        line += ', student baseline {:.2f} ({}): the teacher is {:+.2f} ' \
            'points'.format(base, source, margin)
        if not result['clearly_better']:
            logger.warning(
                '{}. The teacher is not clearly better than the student '
                'trained alone (less than Distill.check.margin = {:g} '
                'points): distilling from it may not pay off. Measure it '
                'on this data with tools/payoff.py, or use a stronger '
                'teacher.'.format(line, settings['margin']))
    else:
        line += ' (set Distill.check.baseline, or --baseline, to compare ' \
            'it with the student trained alone)'
    if result.get('clearly_better', True):
        logger.info(line)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write(os.path.join(output_dir, 'teacher_check.json'),
                     json.dumps(result, indent=1))
    return result
