"""Benchmark distillation: teacher, baseline student and the distilled
students, several seeds each; writes OUT/results.json, OUT/REPORT.md and PNG
plots. A profile names the configs, data and default runs
(detdistill/benchmark.py PROFILES): demo (every loss, far from convergence;
the default), quick (the main job, tools/run_demo.sh), converged (students
trained to their plateau; `--methods sweep`: its loss-weight sweep),
converged_b (a second dataset), gfl_demo and gfl_converged (GFL heads,
localization distillation). A missing profile dataset is generated.

python tools/benchmark.py [--profile PROFILE]
                          [--methods teacher,baseline,l2,...|sweep]
                          [--seeds 0,1]
                          [--out DIR] [--jobs N] [--report_only] [-o k=v ...]
"""
import argparse
import json
import os
import sys
import time

import _path  # noqa: F401

from detdistill import benchmark as bm
from detdistill.cli import main_guard
from detdistill.logger import get_logger
from detdistill.plots import plot_benchmark, plot_loss_ratio


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--profile', default='demo', choices=sorted(bm.PROFILES))
    p.add_argument('--methods', default=None,
                   help="default: the profile's; `sweep`: its loss-weight "
                   "sweep rows (first seed only); all: {}".format(
                       ', '.join(bm.METHODS)))
    p.add_argument('--seeds', default='0,1')
    p.add_argument('--out', default=None, help="default: the profile's "
                   '(results, results/converged, ...)')
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='runs trained at once (default: one per CPU core; '
                   'a CPU run uses one core). Use 1 on a single GPU.')
    p.add_argument('--no_profile', action='store_true',
                   help='skip the step-cost profile')
    p.add_argument('--report_only', action='store_true',
                   help='train nothing: report the finished runs and name '
                   'the others')
    p.add_argument('--fresh', action='store_true',
                   help='retrain runs that already have a summary')
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='config overrides for every run (e.g. epoch=10)')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    log = get_logger()
    prof = bm.PROFILES[args.profile]
    sweep = prof.get('sweep', [])
    names = args.methods.split(',') if args.methods else prof['methods']
    methods = [m for n in names for m in (sweep if n == 'sweep' else [n])]
    out = args.out or prof['out']
    unknown = [m for m in methods if m not in bm.METHODS]
    if unknown:
        sys.exit('unknown method(s) {}; choose from {}'.format(
            unknown, ', '.join(bm.METHODS)))
    seeds = [int(s) for s in args.seeds.split(',')]
    os.makedirs(out, exist_ok=True)
    tic = time.time()
    bm.ensure_data(args.profile, args.opt)
    one_seed = sweep + (['teacher'] if prof.get('one_teacher') else [])
    missing = []
    if args.report_only:
        summaries, missing = bm.finished_summaries(methods, seeds, out,
                                                   one_seed)
    else:
        summaries = bm.run_all(methods, seeds, out, args.opt, args.jobs,
                               reuse=not args.fresh, profile=args.profile,
                               one_seed=one_seed)
    summaries += bm.other_seeds(methods, seeds, out, one_seed)
    if not args.methods:
        for rows in (sweep, prof.get('on_request', [])):
            summaries = bm.with_finished(summaries, rows, seeds, out)
    needs_teacher = any(bm.METHODS[m][0] == 'distill' for m in methods)
    profile = None
    if not (args.no_profile or args.report_only) and needs_teacher:
        log.info('[benchmark] profiling one step of each kind')
        profile = bm.profile_step(out, opts=args.opt, profile=args.profile)
    data = bm.data_fingerprint(args.opt, args.profile)
    log.info('[benchmark] data: {}'.format(data['note']))
    rows = bm.aggregate(summaries)
    targets = bm.check_targets(rows, profile, summaries, prof['targets'])
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({'data': data, 'methods': rows, 'profile': profile,
                   'targets': [
            {'target': t, 'met': ok, 'detail': why} for t, ok, why in targets],
            'runs': [{k: v for k, v in s.items() if k != 'losses'}
                     for s in summaries],
            'not_finished': [list(r) for r in missing]}, f, indent=1)
    plot_benchmark(summaries, out)
    plot_loss_ratio(summaries, out)
    cmd = 'python tools/benchmark.py ' + ' '.join(argv or sys.argv[1:])
    bm.write_report(rows, profile, os.path.join(out, 'REPORT.md'),
                    cmd.strip(), targets,
                    run_wall_s=sum(s['wall_s'] for s in summaries
                                   if not s.get('reused')),
                    bench_wall_s=time.time() - tic, jobs=args.jobs,
                    data_note=data['note'], profile_name=args.profile,
                    balance=bm.loss_balance(summaries),
                    sweep=bm.sweep_table(summaries, sweep, seeds[0]),
                    sweep_seed=seeds[0], missing=missing)
    with open(os.path.join(out, 'REPORT.md')) as f:
        print(f.read())


if __name__ == '__main__':
    main()
