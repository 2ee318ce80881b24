"""The inference table: exported student vs exported teacher, mAP of the
exported models and images/s for Paddle Inference and ONNX Runtime on this
CPU. Every model is exported (and checked) by the same code as
tools/export_model.py, without NMS so that every backend runs every batch
size (as PaddleDetection's benchmark export does); mAP is measured with the
exported models, NMS on the host.

Speed is measured so that models can be compared on a shared machine: for
each (backend, threads, batch) setting the models are timed in alternation,
round after round, in one process; the figure is the median over rounds,
and a model-to-model ratio is the median of the per-round ratios (adjacent
in time, so load from other processes mostly cancels out). Timed: the
backend's run() alone, on preprocessed real images (no decoding, resizing
or host-side NMS).
"""
import os
import platform
import statistics
import time

import numpy as np
import paddle
from ppdet.core.workspace import create

from detdistill.config import activate, build_model, load_config
from detdistill.deploy.evaluate import evaluate_exported
from detdistill.deploy.export import export
from detdistill.deploy.nms import multiclass_nms_numpy
from detdistill.deploy.predictor import BACKENDS, ExportedDetector
from detdistill.logger import get_logger
from detdistill.weights import load_weights

__all__ = ['eval_images', 'run_deploy_speed', 'format_report', 'tile_batch',
           'time_runs', 'measure_speed', 'loadavg']

logger = get_logger()


def eval_images(cfg, n):
    """The first n image paths of the config's EvalDataset."""
    with activate(cfg):
        dataset = create('EvalDataset')()
    dataset.parse_dataset()
    return [r['im_file'] for r in dataset.roidbs[:n]]


def _nms_ms(model, feed, repeats=20):
    """Host NMS per image, in ms, on the model's outputs for one image."""
    boxes, scores = model.run({k: v[:1] for k, v in feed.items()})
    multiclass_nms_numpy(boxes, scores, model.infer_cfg['NMS'])
    tic = time.perf_counter()
    for _ in range(repeats):
        multiclass_nms_numpy(boxes, scores, model.infer_cfg['NMS'])
    return 1000 * (time.perf_counter() - tic) / repeats


def run_deploy_speed(models, model_root, opts=(), backends=(
        'paddle', 'onnxruntime'), threads=(1, 2), batches=(1, 8), rounds=5):
    """models: {name: (config path, weights)}, students first, the teacher
    last (speed ratios are to it). Returns the dict format_report prints."""
    result = {'models': {}, 'machine': {
        'cpus': os.cpu_count(), 'processor': platform.processor() or
        platform.machine(), 'paddle': paddle.__version__,
        'loadavg_start': loadavg()}}
    dirs, feed = {}, None
    for name, (config, weights) in models.items():
        cfg = load_config(config, list(opts) + ['weights=' + weights])
        paddle.set_device('cpu')
        detector = build_model(cfg)
        load_weights(detector, weights)
        images = eval_images(cfg, 8)
        dirs[name] = os.path.join(model_root, name)
        check = export(detector, cfg, dirs[name], exclude_nms=True, onnx=True,
                       check_images=images[:4])
        entry = {'config': config, 'weights': weights,
                 'params_M': sum(int(np.prod(p.shape))
                                 for p in detector.parameters()) / 1e6,
                 'check': check, 'mAP': {}}
        for backend in backends:
            model = ExportedDetector(dirs[name], backend)
            res = evaluate_exported(cfg, model)
            entry['mAP'][backend] = res['mAP']
            entry['num_eval_images'] = res['num_images']
        model = ExportedDetector(dirs[name], 'paddle')
        if feed is None:
            feed = model.preprocess(images)
        entry['host_nms_ms'] = _nms_ms(model, feed)
        result['models'][name] = entry
    logger.info('timing {} rounds per setting; load average {}'.format(
        rounds, loadavg()))
    result['speed'] = measure_speed(dirs, feed, backends, threads, batches,
                                    rounds, log=logger.info)
    result['machine']['loadavg_end'] = loadavg()
    return result


def format_report(result):
    """A markdown table: one row per model, then each model's speed ratio to
    the last one (the teacher)."""
    names = list(result['models'])
    rows = result['speed']
    label = {'paddle': 'Paddle', 'onnxruntime': 'ORT'}
    head = ['model', 'params (M)', 'mAP 11pt / area (Paddle)',
            'mAP 11pt (ORT)'] + ['{} {}t b{}'.format(
                label[r['backend']], r['threads'], r['batch']) for r in rows]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name in names:
        m = result['models'][name]
        cells = [name, '{:.2f}'.format(m['params_M']),
                 '{:.2f} / {:.2f}'.format(100 * m['mAP']['paddle']['11point'],
                                          100 * m['mAP']['paddle']['area']),
                 '{:.2f}'.format(100 * m['mAP'].get('onnxruntime', {}).get(
                     '11point', float('nan')))]
        cells += ['{:.1f}'.format(r['ips'][name]) for r in rows]
        lines.append('| ' + ' | '.join(cells) + ' |')
    ref = names[-1]
    for name in names[:-1]:
        cells = ['{} / {}'.format(name, ref), '{:.2f}x'.format(
            result['models'][name]['params_M'] /
            result['models'][ref]['params_M']), '', '']
        cells += ['**{:.2f}x**'.format(r['ratio'][name]) for r in rows]
        lines.append('| ' + ' | '.join(cells) + ' |')
    machine = result['machine']
    lines += ['', 'img/s: images per second of the exported network (no '
              'NMS), median of {} alternating rounds; ratios: median of the '
              'per-round ratios. "2t b8": 2 threads, batch 8. Host NMS adds '
              '{} ms per image. {} CPUs, load average {} at the start, {} at '
              'the end (other processes share this machine).'.format(
                  len(rows[0]['rounds'][ref]) if rows else 0,
                  ', '.join('{:.2f} ({})'.format(
                      result['models'][n]['host_nms_ms'], n) for n in names),
                  machine['cpus'], _fmt_load(machine['loadavg_start']),
                  _fmt_load(machine['loadavg_end']))]
    return '\n'.join(lines)


def _fmt_load(load):
    return '/'.join('{:.2f}'.format(x) for x in load) if load else 'n/a'


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
