"""Images per second of exported models, measured so that models can be
compared on a shared machine: for each (backend, threads, batch) setting the
models are timed in alternation, round after round, in one process; the
figure is the median over rounds, and a model-to-model ratio is the median of
the per-round ratios (adjacent in time, so load from other processes mostly
cancels out).

Timed: the backend's run() alone, on preprocessed real images (no decoding,
resizing or host-side NMS).
"""
import os
import statistics
import time

import numpy as np

from .predictor import BACKENDS

__all__ = ['tile_batch', 'time_runs', 'measure_speed', 'loadavg']


def loadavg():
    try:
        return os.getloadavg()
    except OSError:
        return None


def tile_batch(feed, batch):
    """The first `batch` images of feed, repeated as needed."""
    n = len(feed['image'])
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feed.items()}


def time_runs(backend, feed, repeats):
    """Seconds per run() over `repeats` consecutive runs."""
    tic = time.perf_counter()
    for _ in range(repeats):
        backend.run(feed)
    return (time.perf_counter() - tic) / repeats


def measure_speed(model_dirs, feed, backends=('paddle', 'onnxruntime'),
                  threads=(1, 2), batches=(1, 8), rounds=5,
                  min_seconds=0.5, reference=None, log=print):
    """model_dirs: {name: exported model dir}. Returns rows
    {'backend', 'threads', 'batch', 'ips': {name: img/s},
     'ratio': {name: median per-round img/s ratio to `reference` (default:
     the last model)}, 'rounds': {name: [img/s per round]}}."""
    rows = []
    names = list(model_dirs)
    reference = reference or names[-1]
    for backend_name in backends:
        for n_threads in threads:
            runners = {name: BACKENDS[backend_name](d, n_threads)
                       for name, d in model_dirs.items()}
            for batch in batches:
                data = tile_batch(feed, batch)
                repeats = {}
                for name, runner in runners.items():  # warm-up, calibrate
                    runner.run(data)
                    once = time_runs(runner, data, 2)
                    repeats[name] = max(2, int(min_seconds / max(once, 1e-6)))
                per_round = {name: [] for name in names}
                for _ in range(rounds):
                    for name in names:
                        sec = time_runs(runners[name], data, repeats[name])
                        per_round[name].append(batch / sec)
                ips = {name: statistics.median(v)
                       for name, v in per_round.items()}
                ratio = {name: statistics.median(
                    a / b for a, b in zip(per_round[name],
                                          per_round[reference]))
                         for name in names}
                row = {'backend': backend_name, 'threads': n_threads,
                       'batch': batch, 'ips': ips, 'ratio': ratio,
                       'rounds': {k: [round(x, 2) for x in v]
                                  for k, v in per_round.items()}}
                rows.append(row)
                log('{} threads={} batch={}: {}'.format(
                    backend_name, n_threads, batch, ', '.join(
                        '{} {:.1f} img/s'.format(k, v)
                        for k, v in ips.items())))
    return rows
