"""Benchmark distillation on the demo data: teacher, baseline student and the
distilled students, several seeds each; writes benchmark/results.json,
benchmark/REPORT.md and PNG plots.

python tools/benchmark.py [--methods teacher,baseline,l2,fine_grained,kl]
                          [--seeds 0,1] [--out benchmark] [-o k=v ...]
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
    p.add_argument('--methods', default=','.join(bm.METHODS))
    p.add_argument('--seeds', default='0,1')
    p.add_argument('--out', default='benchmark')
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
    needs_teacher = any(bm.METHODS[m][0] == 'distill' for m in methods)
    # Teachers first: every distilled student learns from the seed-0 teacher.
    teachers = seeds if 'teacher' in methods else []
    if needs_teacher and 0 not in teachers:
        teachers = [0] + teachers
    jobs = [('teacher', s) for s in teachers] + [
        (m, s) for m in methods if m != 'teacher' for s in seeds]
    os.makedirs(args.out, exist_ok=True)
    summaries, tic, done_cost = [], time.time(), 0.
    left_cost = sum(bm.COST[m] for m, _ in jobs)
    for i, (m, s) in enumerate(jobs):
        log.info('[benchmark] run {}/{}: {} seed {}'.format(
            i + 1, len(jobs), m, s))
        started = time.time()
        summaries.append(bm.run_one(m, s, args.out, args.opt,
                                    reuse=not args.fresh))
        left_cost -= bm.COST[m]
        if time.time() - started > 5:  # trained, not reused: counts for ETA
            done_cost += bm.COST[m]
        elapsed = time.time() - tic
        eta = elapsed / done_cost * left_cost if done_cost else float('nan')
        log.info('[benchmark] {} seed {}: mAP 11pt {:.2f} area {:.2f} | '
                 'elapsed {:.0f}s, ETA {:.0f}s'.format(
                     m, s, 100 * summaries[-1]['mAP']['11point'],
                     100 * summaries[-1]['mAP']['area'], elapsed, eta))
    profile = None
    if not args.no_profile and needs_teacher:
        log.info('[benchmark] profiling one step of each kind')
        profile = bm.profile_step(args.out, opts=args.opt)
    rows = bm.aggregate(summaries)
    targets = bm.check_targets(rows, profile)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump({'methods': rows, 'profile': profile, 'targets': [
            {'target': t, 'met': ok, 'detail': why} for t, ok, why in targets],
            'runs': [{k: v for k, v in s.items() if k != 'losses'}
                     for s in summaries]}, f, indent=1)
    plot_benchmark(summaries, args.out)
    cmd = 'python tools/benchmark.py ' + ' '.join(argv or sys.argv[1:])
    bm.write_report(rows, profile, os.path.join(args.out, 'REPORT.md'),
                    cmd.strip(), targets,
                    total_wall_s=sum(s['wall_s'] for s in summaries))
    with open(os.path.join(args.out, 'REPORT.md')) as f:
        print(f.read())


if __name__ == '__main__':
    main()
