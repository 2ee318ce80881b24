"""Images per second of exported float and INT8 students, Paddle Inference
(oneDNN off) and ONNX Runtime, on this CPU.

python tools/dev/int8_speed.py -c CFG --weights NAME=W [NAME=W ...]
    [--teacher TEACHER_CFG=W] [--images N] [--rounds 5] [--threads 1 2]
    [--batch 1] [--out_dir output/int8_speed] [--md FILE] [-o k=v ...]

Each W (float weights or tools/quantize.py's int8.pdparams) is exported
with --exclude_nms --onnx through the project's export (and its check),
then the network alone is timed on the first N EvalDataset images,
preprocessed once: the median over `rounds` rounds, every (model, backend,
threads) timed once per round, so a change of load hits all alike. Prints
one JSON line per (model, backend, threads), with the exported files' size
on disk and, against the first model, the median of the per-round time
ratios; --md writes them as a table.
"""
import argparse
import json
import os
import statistics
import time

from detdistill.cli import name_value
from detdistill.config import build_model, load_config
from detdistill.deploy.export import export
from detdistill.deploy.predictor import ExportedDetector
from detdistill.quant.checkpoint import load_any_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('-c', '--config', required=True)
    p.add_argument('--weights', nargs='+', required=True, type=name_value)
    p.add_argument('-o', '--opt', nargs='*', default=[])
    p.add_argument('--images', type=int, default=64)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, nargs='+', default=[1])
    p.add_argument('--teacher', default=None, metavar='CFG=W', type=name_value,
                   help='also time this model (its own config)')
    p.add_argument('--md', default=None, help='write the table here')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--out_dir', default='output/int8_speed')
    return p.parse_args(argv)


def _images(cfg, n):
    ds = cfg['EvalDataset']
    with open(os.path.join(ds['dataset_dir'], ds['anno_path'])) as f:
        return [os.path.join(ds['dataset_dir'], line.split()[0])
                for line in f if line.strip()][:n]


FILES = {'paddle': ('model.json', 'model.pdiparams'),
         'onnxruntime': ('model.onnx',)}


def _size_mb(out, backend):
    return sum(os.path.getsize(os.path.join(out, f))
               for f in FILES[backend]) / 2 ** 20


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    images = _images(cfg, args.images)
    todo = [(item, cfg) for item in args.weights]
    if args.teacher:
        tcfg, tw = args.teacher
        todo.append((('teacher', tw), load_config(tcfg, args.opt)))
    models, sizes = {}, {}
    for (name, weights), mcfg in todo:
        detector = build_model(mcfg)
        load_any_weights(detector, weights)
        out = os.path.join(args.out_dir, name)
        export(detector, mcfg, out, exclude_nms=True, onnx=True,
               check_images=images[:4])
        for backend in ('paddle', 'onnxruntime'):
            sizes[(name, backend)] = _size_mb(out, backend)
            for threads in args.threads:
                m = ExportedDetector(out, backend, threads=threads)
                feeds = [m.preprocess(images[i:i + args.batch])
                         for i in range(0, len(images), args.batch)]
                m.run(feeds[0])  # warm-up
                models[(name, backend, threads)] = (m, feeds)
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for key, (m, feeds) in models.items():
            tic = time.perf_counter()
            for feed in feeds:
                m.run(feed)
            times[key].append(time.perf_counter() - tic)
    first = todo[0][0][0]
    rows = []
    for (name, backend, threads), t in times.items():
        ref = times[(first, backend, threads)]
        rows.append({'model': name, 'backend': backend, 'threads': threads,
                     'batch': args.batch, 'images': len(images),
                     'images_per_sec': round(
                         len(images) / statistics.median(t), 1),
                     'speed_vs_' + first: round(statistics.median(
                         r / x for r, x in zip(ref, t)), 2),
                     'size_mb': round(sizes[(name, backend)], 2),
                     'rounds_s': [round(x, 3) for x in t]})
        print(json.dumps(rows[-1]))
    if args.md:
        lines = ['| model | backend | threads | images/s | speed vs {} '
                 '(median of per-round ratios) | size on disk (MB) |'
                 .format(first), '|---|---|---|---|---|---|']
        lines += ['| {model} | {backend} | {threads} | {images_per_sec} | '
                  '{ratio:.2f}x | {size_mb} |'.format(
                      ratio=r['speed_vs_' + first], **r) for r in rows]
        with open(args.md, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
