"""Benchmark distillation on the demo data: teacher, baseline student and the
distilled students, several seeds each; writes benchmark/results.json,
benchmark/REPORT.md and PNG plots.

python tools/benchmark.py [--methods teacher,baseline,l2,fine_grained,kl]
                          [--seeds 0,1] [--out benchmark] [--jobs N]
                          [-o k=v ...]
"""
import argparse
import json
import os
import sys
import time

import _path  # noqa: F401

from detdistill import benchmark as bm
from detdistill.logger import get_logger
from detdistill.plots import plot_benchmark


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--methods', default=','.join(bm.DEFAULT_METHODS),
                   help='default: all but the unlabeled-images rows ({})'
                   .format(', '.join(m for m in bm.METHODS
                                     if m not in bm.DEFAULT_METHODS)))
    p.add_argument('--seeds', default='0,1')
    p.add_argument('--out', default='benchmark')
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='runs trained at once (default: one per CPU core; '
                   'a CPU run uses one core). Use 1 on a single GPU.')
    p.add_argument('--no_profile', action='store_true',
                   help='skip the step-cost profile')
    p.add_argument('--fresh', action='store_true',
                   help='retrain runs that already have a summary')
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='config overrides for every run (e.g. epoch=10)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    log = get_logger()
    methods = args.methods.split(',')
    unknown = [m for m in methods if m not in bm.METHODS]
    if unknown:
        sys.exit('unknown method(s) {}; choose from {}'.format(
            unknown, ', '.join(bm.METHODS)))
    seeds = [int(s) for s in args.seeds.split(',')]
    os.makedirs(args.out, exist_ok=True)
    tic = time.time()
    summaries = bm.run_all(methods, seeds, args.out, args.opt, args.jobs,
                           reuse=not args.fresh)
    needs_teacher = any(bm.METHODS[m][0] == 'distill' for m in methods)
    profile = None
    if not args.no_profile and needs_teacher:
        log.info('[benchmark] profiling one step of each kind')
        profile = bm.profile_step(args.out, opts=args.opt)
    data = bm.data_fingerprint(args.opt)
    log.info('[benchmark] data: {}'.format(data['note']))
    rows = bm.aggregate(summaries)
    targets = bm.check_targets(rows, profile)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump({'data': data, 'methods': rows, 'profile': profile,
                   'targets': [
            {'target': t, 'met': ok, 'detail': why} for t, ok, why in targets],
            'runs': [{k: v for k, v in s.items() if k != 'losses'}
                     for s in summaries]}, f, indent=1)
    plot_benchmark(summaries, args.out)
    cmd = 'python tools/benchmark.py ' + ' '.join(argv or sys.argv[1:])
    bm.write_report(rows, profile, os.path.join(args.out, 'REPORT.md'),
                    cmd.strip(), targets,
                    run_wall_s=sum(s['wall_s'] for s in summaries
                                   if not s.get('reused')),
                    bench_wall_s=time.time() - tic, jobs=args.jobs,
                    data_note=data['note'])
    with open(os.path.join(args.out, 'REPORT.md')) as f:
        print(f.read())


if __name__ == '__main__':
    main()
