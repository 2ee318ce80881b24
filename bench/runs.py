"""A run: one catalogue row at one seed, in a profile. Where it lives, the
command that trains it, the data it reads, and the summary a finished run
leaves (later invocations reuse it)."""
import json
import os
import subprocess
import sys

from detdistill.config import load_config
from detdistill.engine.callbacks import read_history
from detdistill.engine.checkpoint import latest_checkpoint
from detdistill.fileio import atomic_write
from detdistill.logger import get_logger

from .catalogue import catalogue

__all__ = ['ROOT', 'run_dir', 'config_of', 'profile_opts', 'dataset_dir',
           'data_path', 'overrides', 'teacher_weights', 'command',
           'ensure_data', 'data_fingerprint', 'last_checkpoint', 'history',
           'progress', 'read_summary', 'write_summary']

logger = get_logger()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {'train': 'tools/train.py',
           'distill': 'slim/distillation/distill.py'}


def _abs(path):
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def _cfg_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def run_dir(out, method, seed):
    return os.path.join(out, 'runs', '{}_s{}'.format(method, seed))


def config_of(method, profile):
    """The config file a row trains in `profile`."""
    return profile.config(catalogue().methods[method].role)


def profile_opts(profile, opts=()):
    """The profile's overrides, then the user's (which win)."""
    return list(profile.opts) + list(opts)


def dataset_dir(profile, opts=()):
    """The training dataset directory of the runs (with the -o overrides)."""
    return load_config(_abs(profile.student), profile_opts(profile, opts))[
        'TrainDataset']['dataset_dir']


def data_path(profile, opts=()):
    """dataset_dir, absolute."""
    return _abs(dataset_dir(profile, opts))


def overrides(method, profile, opts=()):
    """A row's -o overrides, {dataset_dir} filled in."""
    extra = catalogue().methods[method].overrides
    if any('{dataset_dir}' in o for o in extra):
        root = dataset_dir(profile, opts)
        extra = [o.replace('{dataset_dir}', root) for o in extra]
    return list(extra)


def teacher_weights(out, profile, seed=0):
    """The weights of the teacher the distilled rows learn from: given
    (`teacher_weights`), the profile's own, or those of `teacher_from`."""
    if profile.teacher_weights:
        return profile.teacher_weights
    return os.path.join(run_dir(profile.teacher_from or out,
                                catalogue().teacher, seed),
                        _cfg_name(profile.teacher), 'model_final')


def command(method, seed, out, profile, opts=()):
    tool = catalogue().methods[method].tool
    cmd = [sys.executable, SCRIPTS[tool], '-c', config_of(method, profile)]
    if tool == 'distill':
        cmd += ['-t', profile.teacher, '--teacher_pretrained',
                teacher_weights(out, profile)]
    # The teacher takes the profile's data overrides, not a row's. The
    # run's own folder and seed come last: a user's -o cannot move them.
    return cmd + ['--eval', '-o'] + overrides(method, profile, opts) + \
        profile_opts(profile, opts) + [
            'save_dir=' + run_dir(out, method, seed), 'seed={}'.format(seed)]


def ensure_data(profile, opts=()):
    """Run the profile's `make_data` command if its training dataset
    directory has no lists yet."""
    path = data_path(profile, opts)
    if os.path.isfile(os.path.join(path, 'trainval.txt')):
        return
    logger.info('[bench] writing the {} dataset to {}'.format(profile.name,
                                                              path))
    # bounded: writing 4000 images takes about a minute
    subprocess.run([sys.executable] + [a.replace('{dataset_dir}', path)
                                       for a in profile.make_data],
                   cwd=ROOT, check=True, timeout=1800)


def data_fingerprint(profile, opts=()):
    """Which data the runs read: the training dataset directory and the
    sha256 of its content, compared with the profile's pinned dataset."""
    from detdistill.data.demo import PINNED_DIGESTS, dataset_digest
    root = dataset_dir(profile, opts)
    try:
        digest = dataset_digest(_abs(root))
    except OSError:
        digest = None
    pinned = digest == PINNED_DIGESTS.get(profile.data_name)
    note = '{}, content sha256 {} ({})'.format(
        root, digest and digest[:16], 'the pinned {} dataset'.format(
            profile.data_name) if pinned else 'NOT the pinned {} dataset: '
        'results are not comparable with the README'.format(
            profile.data_name))
    return {'dataset_dir': root, 'sha256': digest, 'pinned_default': pinned,
            'note': note}


def last_checkpoint(run, cfg):
    """Prefix of the newest complete epoch checkpoint in a run directory, or
    None."""
    return latest_checkpoint(os.path.join(run, _cfg_name(cfg)))


def history(out, run, profile):
    """The training log (history.jsonl records) of a run."""
    return read_history(os.path.join(run_dir(out, *run), _cfg_name(
        config_of(run[0], profile)), 'history.jsonl'))


def progress(out, run, profile):
    """(step, total_steps) of a running run, from its history.jsonl."""
    train = [r for r in history(out, run, profile)
             if r['kind'] == 'train' and 'total_steps' in r]
    return (train[-1]['step'], train[-1]['total_steps']) if train else (0, 0)


def read_summary(out, run):
    """The summary of a finished run (marked reused), or None."""
    path = os.path.join(run_dir(out, *run), 'summary.json')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return dict(json.load(f), reused=True)


def write_summary(out, run, summary):
    """Atomically: a summary marks a finished run that later invocations
    reuse, so a half-written one must never exist."""
    atomic_write(os.path.join(run_dir(out, *run), 'summary.json'),
                 json.dumps(summary))
