"""Inference table: exported student vs exported teacher, mAP and images/s
for Paddle Inference and ONNX Runtime on this CPU.

python tools/benchmark_deploy.py --student CFG --student_weights W
    --teacher CFG --teacher_weights W [-o k=v ...] [--rounds 5]
    [--out benchmark] [--model_root output/deploy_benchmark]
Writes OUT/DEPLOY.md and OUT/deploy.json and prints the table.
"""
import argparse
import json
import os

import _path  # noqa: F401

from detdistill.deploy.benchmark import format_report, run_deploy_benchmark


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--student', default='configs/demo/yolov3_mobilenet_v1_demo.yml')
    p.add_argument('--student_weights', required=True)
    p.add_argument('--teacher', default='configs/demo/yolov3_r34_demo.yml')
    p.add_argument('--teacher_weights', required=True)
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='config overrides for both models')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--threads', default='1,2')
    p.add_argument('--batches', default='1,8')
    p.add_argument('--out', default='benchmark')
    p.add_argument('--model_root', default='output/deploy_benchmark')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = run_deploy_benchmark(
        {'student': (args.student, args.student_weights),
         'teacher': (args.teacher, args.teacher_weights)},
        args.model_root, args.opt, rounds=args.rounds,
        threads=[int(t) for t in args.threads.split(',')],
        batches=[int(b) for b in args.batches.split(',')])
    table = format_report(result)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'deploy.json'), 'w') as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, 'DEPLOY.md'), 'w') as f:
        f.write('# Exported models: accuracy and CPU speed\n\n`python '
                'tools/benchmark_deploy.py {}`\n\n{}\n'.format(
                    ' '.join(argv if argv is not None else
                             __import__('sys').argv[1:]), table))
    print(table)
    return result


if __name__ == '__main__':
    main()
