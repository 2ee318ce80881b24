"""Images per second of exported float and INT8 students, Paddle Inference
(oneDNN off) and ONNX Runtime, on this CPU.

python tools/dev/int8_speed.py -c CFG --weights NAME=W [NAME=W ...]
    [--images N] [--rounds 5] [--threads 1] [--batch 1]
    [--out_dir output/int8_speed] [-o k=v ...]

Each W (float weights or tools/quantize.py's int8.pdparams) is exported
with --exclude_nms --onnx through the project's export (and its check),
then the network alone is timed on the first N EvalDataset images,
preprocessed once: the median over `rounds` alternating rounds. Prints one
JSON line per (model, backend).
"""
import argparse
import json
import os
import statistics
import time

from detdistill.config import build_model, load_config
from detdistill.deploy.export import export
from detdistill.deploy.predictor import ExportedDetector
from detdistill.quant.checkpoint import load_any_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('-c', '--config', required=True)
    p.add_argument('--weights', nargs='+', required=True)
    p.add_argument('-o', '--opt', nargs='*', default=[])
    p.add_argument('--images', type=int, default=64)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--out_dir', default='output/int8_speed')
    return p.parse_args(argv)


def _images(cfg, n):
    ds = cfg['EvalDataset']
    with open(os.path.join(ds['dataset_dir'], ds['anno_path'])) as f:
        return [os.path.join(ds['dataset_dir'], line.split()[0])
                for line in f if line.strip()][:n]


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    images = _images(cfg, args.images)
    models = {}
    for item in args.weights:
        name, weights = item.split('=', 1)
        detector = build_model(cfg)
        load_any_weights(detector, weights)
        out = os.path.join(args.out_dir, name)
        export(detector, cfg, out, exclude_nms=True, onnx=True,
               check_images=images[:4])
        for backend in ('paddle', 'onnxruntime'):
            m = ExportedDetector(out, backend, threads=args.threads)
            feeds = [m.preprocess(images[i:i + args.batch])
                     for i in range(0, len(images), args.batch)]
            m.run(feeds[0])  # warm-up
            models[(name, backend)] = (m, feeds)
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for key, (m, feeds) in models.items():
            tic = time.perf_counter()
            for feed in feeds:
                m.run(feed)
            times[key].append(time.perf_counter() - tic)
    for (name, backend), t in times.items():
        print(json.dumps({'model': name, 'backend': backend,
                          'threads': args.threads, 'batch': args.batch,
                          'images': len(images),
                          'images_per_sec': round(
                              len(images) / statistics.median(t), 1),
                          'rounds_s': [round(x, 3) for x in t]}))


if __name__ == '__main__':
    main()
