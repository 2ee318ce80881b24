"""Inference table: exported student vs exported teacher, mAP and images/s
for Paddle Inference and ONNX Runtime on this CPU.

python tools/dev/deploy_speed.py --student_weights [NAME=]W [NAME=W ...]
    --teacher_weights W [--student CFG] [--teacher CFG] [-o k=v ...]
    [--rounds 5] [--out results] [--model_root output/deploy_benchmark]
Several student weights (e.g. baseline=... l2=...) share the student config.
Writes OUT/DEPLOY.md and OUT/deploy.json and prints the table.
"""
import argparse
import json
import os
import sys

from bench.deploy_speed import format_report, run_deploy_speed
from detdistill.fileio import atomic_write


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--student',
                   default='configs/demo/yolov3_mobilenet_v1_demo.yml')
    p.add_argument('--student_weights', nargs='+', required=True)
    p.add_argument('--teacher', default='configs/demo/yolov3_r34_demo.yml')
    p.add_argument('--teacher_weights', required=True)
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='config overrides for both models')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', default='1,2')
    p.add_argument('--batches', default='1,8')
    p.add_argument('--out', default='results')
    p.add_argument('--model_root', default='output/deploy_benchmark')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    models = {}
    for item in args.student_weights:
        name, _, path = item.rpartition('=')
        models[name or 'student'] = (args.student, path)
    models['teacher'] = (args.teacher, args.teacher_weights)
    result = run_deploy_speed(
        models, args.model_root, args.opt, rounds=args.rounds,
        threads=[int(t) for t in args.threads.split(',')],
        batches=[int(b) for b in args.batches.split(',')])
    table = format_report(result)
    command = 'python tools/dev/deploy_speed.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, 'deploy.json'),
                 json.dumps(dict(result, command=command), indent=1))
    atomic_write(os.path.join(args.out, 'DEPLOY.md'),
                 '# Exported models: accuracy and CPU speed\n\n`{}`\n\n{}\n'
                 .format(command, table))
    print(table)
    return result


if __name__ == '__main__':
    main()
