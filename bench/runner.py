"""Train a profile's runs: plan them, run each as a real user command in its
own process (so peak memory is per run), several at a time, with progress
and an ETA; or read the runs that have finished.

Accuracy and throughput come from each run's history.jsonl."""
import concurrent.futures
import json
import os
import statistics
import sys
import time

from detdistill.logger import get_logger

from .catalogue import catalogue
from .eta import estimate
from .runs import (command, config_of, data_path, history, last_checkpoint,
                   profile_opts, progress, read_summary, run_dir,
                   teacher_weights, write_summary)
from .splits import SPLITS
from .watch import STOP, run_watched

__all__ = ['cost', 'plan', 'run_one', 'run_all', 'finished_summaries',
           'with_finished', 'other_seeds']

logger = get_logger()


def cost(method, profile):
    """Relative wall time of a run of `method` in `profile`."""
    m = catalogue().methods[method]
    return profile.cost[m.kind] * m.cost_scale


def plan(methods, seeds, profile, one_seed=()):
    """The runs to do, in start order, and what each must wait for. Every
    distilled student learns from the seed-0 teacher, so that teacher is
    trained (first) whenever a distill method is asked for; the other runs
    follow longest first, which keeps parallel workers evenly loaded.
    Methods in `one_seed` run with the first seed only."""
    rows, teacher = catalogue().methods, catalogue().teacher
    teachers = list(seeds) if teacher in methods else []
    if teacher in one_seed:
        teachers = teachers[:1]
    if any(rows[m].distills for m in methods) and 0 not in teachers:
        teachers = [0] + teachers
    teachers.sort(key=lambda s: s != 0)
    runs = [(teacher, s) for s in teachers] + [
        (m, s) for m in methods if m != teacher
        for s in (seeds[:1] if m in one_seed else seeds)]
    runs = runs[:1] + sorted(runs[1:], key=lambda r: -cost(r[0], profile))
    needs = {r: {(teacher, 0)} if rows[r[0]].distills else set()
             for r in runs}
    return runs, needs


def run_one(method, seed, out, profile, opts=(), reuse=True,
            need_weights=False):
    """Train (or reuse) one run; return its summary. A run that was
    interrupted (a killed benchmark, a session's end) continues from its last
    epoch checkpoint with -r, which resumes exactly; its wall time then
    counts the resumed part only (`resumed_from` says so). `need_weights`:
    distilled rows will load this teacher's weights, so a summary without
    them (committed results keep summaries, not every model) is not enough."""
    run, row = (method, seed), catalogue().methods[method]
    summary = read_summary(out, run) if reuse else None
    d = run_dir(out, method, seed)
    trained_here = not (profile.teacher_from or profile.teacher_weights)
    if summary and need_weights and trained_here and \
            not _has_weights(out, profile, seed):
        _set_aside(d, summary, teacher_weights(out, profile, seed))
        summary = None
    if summary:
        return summary
    os.makedirs(d, exist_ok=True)
    if row.role == 'teacher' and (profile.teacher_from or
                                  profile.teacher_weights):
        return _evaluate_teacher(run, out, profile, opts)
    cfg = config_of(method, profile)
    resume = last_checkpoint(d, cfg) if reuse else None
    if row.split:
        SPLITS[row.split](data_path(profile, opts))
    rss_file = os.path.join(d, 'peak_rss_kb.txt')
    cmd = ['/usr/bin/time', '-f', '%M', '-o', rss_file] + \
        command(method, seed, out, profile, opts) + (
            ['-r', resume] if resume else [])
    if resume:
        logger.info('[bench] {} seed {} resumes from {}'.format(
            method, seed, resume))
    tic = time.time()
    code = run_watched(cmd, os.path.join(d, 'train.log'), append=bool(resume))
    if code != 0:
        raise RuntimeError('{} seed {} failed (exit {}); see {}'.format(
            method, seed, code, os.path.join(d, 'train.log')))
    hist = history(out, run, profile)
    train = [r for r in hist if r['kind'] == 'train']
    evals = [r for r in hist if r['kind'] == 'eval']
    with open(rss_file) as f:
        peak_kb = int(f.read().strip().splitlines()[-1])
    steady = train[1:] or train  # the first window includes start-up
    summary = {
        'method': method, 'seed': seed, 'wall_s': time.time() - tic,
        'steps': train[-1]['step'] if train else 0,
        'mAP': evals[-1]['mAP'], 'eval_images_per_sec':
            evals[-1]['images_per_sec'],
        'train_images_per_sec': statistics.mean(r['ips'] for r in steady),
        'step_time_s': statistics.mean(r['batch_time'] for r in steady),
        'peak_rss_mb': peak_kb / 1024., 'resumed_from': resume,
        'curve': [(r['step'], r['mAP']) for r in evals],
        'losses': [{k: v for k, v in r.items() if k not in
                    ('kind', 'epoch', 'lr', 'data_time', 'ips',
                     'total_steps')}
                   for r in train],
    }
    write_summary(out, run, summary)
    return summary


def _has_weights(out, profile, seed):
    w = teacher_weights(out, profile, seed)
    return os.path.isfile(w + '.pdparams') or os.path.isfile(w)


def _set_aside(d, summary, weights):
    """Retrain a teacher whose weights are gone; its earlier record is kept
    beside the new one (summary.previous.json), so the two can be compared."""
    logger.warning(
        '[bench] {} seed {} finished before (mAP 11pt {:.2f}) but its '
        'weights {} are missing: training it again; the earlier record is '
        'kept as summary.previous.json'.format(
            summary['method'], summary['seed'],
            100 * summary['mAP']['11point'], weights))
    os.replace(os.path.join(d, 'summary.json'),
               os.path.join(d, 'summary.previous.json'))


def _evaluate_teacher(run, out, profile, opts):
    """The summary of a teacher trained elsewhere: its training record as
    committed (`teacher_from`; none for given `teacher_weights`), its mAP
    measured here with tools/eval.py (which also proves the weights load
    into this config)."""
    src = profile.teacher_from or profile.teacher_weights
    if profile.teacher_from:
        record = read_summary(src, run)
        if record is None:
            raise RuntimeError(
                'the {} profile distils from the teacher trained in {}, '
                'whose record {} is missing'.format(profile.name, src, os.path
                                                    .join(run_dir(src, *run),
                                                          'summary.json')))
    else:
        record = {'method': run[0], 'seed': run[1], 'steps': 0, 'curve': [],
                  'losses': [], 'mAP': None}
    summary = {k: v for k, v in record.items() if k != 'reused'}
    d = run_dir(out, *run)
    weights = teacher_weights(out, profile, run[1])
    res_file = os.path.join(d, 'eval.json')
    cmd = [sys.executable, 'tools/eval.py', '-c', profile.teacher,
           '--json', res_file, '-o', 'weights=' + weights] + \
        profile_opts(profile, opts)
    tic = time.time()
    code = run_watched(cmd, os.path.join(d, 'eval.log'))
    if code != 0:
        raise RuntimeError('evaluating the teacher {} failed (exit {}); see '
                           '{}'.format(weights, code,
                                       os.path.join(d, 'eval.log')))
    with open(res_file) as f:
        res = json.load(f)
    summary.update(mAP=res['mAP'], eval_images_per_sec=res['images_per_sec'],
                   wall_s=time.time() - tic, trained_in=src,
                   mAP_where_trained=summary['mAP'])
    write_summary(out, run, summary)
    return summary


def finished_summaries(methods, seeds, out, profile, one_seed=()):
    """(summaries of the planned runs that have finished, in plan order,
    the (method, seed) of those that have not): a report without training."""
    done, missing = [], []
    for r in plan(methods, seeds, profile, one_seed)[0]:
        s = read_summary(out, r)
        if s:
            done.append(s)
        else:
            missing.append(r)
    return done, missing


def with_finished(summaries, methods, seeds, out, profile):
    """`summaries` plus the finished runs of `methods` not among them yet
    (a profile's on-request rows: reported when finished). A distill row's
    plan includes its teacher, which must not count twice."""
    seen = {(s['method'], s['seed']) for s in summaries}
    return list(summaries) + [
        s for s in finished_summaries(methods, seeds, out, profile)[0]
        if (s['method'], s['seed']) not in seen]


def other_seeds(methods, seeds, out, one_seed):
    """Finished runs of one-seed rows at the other seeds (a sweep weight
    rerun on every seed with `--methods ROW --seeds S`): reported with
    their row, never trained by a bare profile run."""
    return [s for s in (read_summary(out, (m, seed)) for m in methods
                        if m in one_seed for seed in seeds[1:]) if s]


def run_all(methods, seeds, out, profile, opts=(), jobs=1, reuse=True,
            heartbeat=60, one_seed=()):
    """Train every planned run, `jobs` at a time (a CPU run uses one core:
    see results/PROFILE.md), logging progress and an ETA every `heartbeat`
    seconds and at each finished run. Returns the summaries in plan order."""
    runs, needs = plan(methods, seeds, profile, one_seed)
    rows = catalogue().methods
    # the seed-0 teacher's weights, when a distilled row will load them
    weights_needed = {(catalogue().teacher, 0)} if any(
        rows[m].distills for m, _ in runs) else set()
    jobs = max(1, jobs)
    pending, running, done, started = list(runs), {}, {}, {}
    tic = time.time()

    def report(finished=None):
        now = time.time()
        steps = {r: progress(out, r, profile) for r in running.values()}
        eta = estimate(
            pending, needs, jobs,
            {r: (now - started[r], st, tot) for r, (st, tot) in steps.items()},
            # an evaluated teacher (trained_in) has measured no training
            {r: (s['wall_s'], 'trained_in' not in s) for r, s in done.items()
             if not s.get('reused')},
            lambda r: cost(r[0], profile),
            lambda r: catalogue().methods[r[0]].kind)
        head = '{} seed {}: mAP 11pt {:.2f} area {:.2f} | '.format(
            finished[0], finished[1],
            100 * done[finished]['mAP']['11point'],
            100 * done[finished]['mAP']['area']) if finished else ''
        logger.info('[bench] {}{}/{} runs done, running: {} | elapsed '
                    '{:.0f}s, ETA {}'.format(
                        head, len(done), len(runs), ', '.join(
                            '{} s{} {}/{}'.format(r[0], r[1], st, tot or '?')
                            for r, (st, tot) in steps.items()) or '-',
                        now - tic, '?' if eta is None else
                        '{:.0f}s'.format(eta)))

    pool = concurrent.futures.ThreadPoolExecutor(jobs)
    try:
        while pending or running:
            for r in list(pending):
                if len(running) >= jobs:
                    break
                if needs[r] <= set(done):
                    pending.remove(r)
                    logger.info('[bench] start {} seed {} -> {}'.format(
                        r[0], r[1], run_dir(out, *r)))
                    started[r] = time.time()
                    running[pool.submit(run_one, r[0], r[1], out, profile,
                                        opts, reuse,
                                        r in weights_needed)] = r
            finished, _ = concurrent.futures.wait(
                running, timeout=heartbeat,
                return_when=concurrent.futures.FIRST_COMPLETED)
            if not finished:
                report()
            for f in finished:
                # A failure propagates once the other running runs end;
                # their summaries are saved, so a rerun reuses them.
                r = running.pop(f)
                done[r] = f.result()
                report(r)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: end the children, not wait
        STOP.set()
        raise
    finally:
        pool.shutdown(wait=True)  # bounded: run_watched ends on STOP
    return [done[r] for r in runs]
