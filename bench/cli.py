"""Benchmark distillation: teacher, baseline student and the distilled
students, several seeds each; writes OUT/results.json, OUT/REPORT.md and PNG
plots. A profile (bench/catalogue.yaml) names the configs, data and default
runs: demo (every loss, far from convergence; the default), quick (the main
job, tools/run_demo.sh), converged (students trained to their plateau;
`--methods sweep`: its loss-weight sweep), converged_b (a second dataset),
gfl_demo and gfl_converged (GFL heads, localization distillation). A
missing profile dataset is generated.

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

from detdistill.cli import main_guard
from detdistill.logger import get_logger

from . import runner
from .catalogue import catalogue
from .plots import plot_benchmark, plot_loss_ratio
from .report import aggregate, loss_balance, sweep_table, write_report
from .runs import data_fingerprint, ensure_data, teacher_weights
from .step_cost import distill_step_cost
from .targets import check_targets

__all__ = ['parse_args', 'main']


def parse_args(argv=None):
    cat = catalogue()
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--profile', default='demo', choices=sorted(cat.profiles))
    p.add_argument('--methods', default=None,
                   help="default: the profile's; `sweep`: its loss-weight "
                   "sweep rows (first seed only); all: {}".format(
                       ', '.join(cat.methods)))
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


def _previous(out):
    try:
        with open(os.path.join(out, 'results.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@main_guard
def main(argv=None):
    args = parse_args(argv)
    log = get_logger()
    cat = catalogue()
    prof = cat.profiles[args.profile]
    names = args.methods.split(',') if args.methods else prof.methods
    methods = [m for n in names for m in (prof.sweep if n == 'sweep'
                                          else [n])]
    out = args.out or prof.out
    unknown = [m for m in methods if m not in cat.methods]
    if unknown:
        sys.exit('unknown method(s) {}; choose from {}'.format(
            unknown, ', '.join(cat.methods)))
    seeds = [int(s) for s in args.seeds.split(',')]
    os.makedirs(out, exist_ok=True)
    tic = time.time()
    ensure_data(prof, args.opt)
    one_seed = list(prof.sweep) + ([cat.teacher] if prof.one_teacher else [])
    missing = []
    if args.report_only:
        summaries, missing = runner.finished_summaries(methods, seeds, out,
                                                       prof, one_seed)
    else:
        summaries = runner.run_all(methods, seeds, out, prof, args.opt,
                                   args.jobs, reuse=not args.fresh,
                                   one_seed=one_seed)
    summaries += runner.other_seeds(methods, seeds, out, one_seed)
    if not args.methods:
        for rows in (prof.sweep, prof.on_request):
            summaries = runner.with_finished(summaries, rows, seeds, out,
                                             prof)
    step_cost = None
    if args.report_only:  # nothing is timed: keep the last measured profile
        step_cost = _previous(out).get('profile')
    elif not args.no_profile and any(
            cat.methods[m].distills for m in methods):
        log.info('[bench] timing one step of each kind')
        step_cost = distill_step_cost(prof, teacher_weights(out, prof),
                                      opts=args.opt)
    data = data_fingerprint(prof, args.opt)
    log.info('[bench] data: {}'.format(data['note']))
    rows = aggregate(summaries)
    targets = check_targets(rows, step_cost, summaries, prof.targets)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({
            'data': data, 'methods': rows, 'profile': step_cost,
            'targets': [{'target': t, 'met': ok, 'detail': why}
                        for t, ok, why in targets],
            'runs': [{k: v for k, v in s.items() if k != 'losses'}
                     for s in summaries],
            'not_finished': [list(r) for r in missing]}, f, indent=1)
    plot_benchmark(summaries, out)
    plot_loss_ratio(summaries, out)
    cmd = 'python tools/benchmark.py ' + ' '.join(argv or sys.argv[1:])
    write_report(rows, step_cost, os.path.join(out, 'REPORT.md'),
                 cmd.strip(), prof, targets,
                 run_wall_s=sum(s['wall_s'] for s in summaries
                                if not s.get('reused')),
                 bench_wall_s=time.time() - tic, jobs=args.jobs,
                 data_note=data['note'],
                 balance=loss_balance(summaries),
                 sweep=sweep_table(summaries, prof, seeds[0]),
                 sweep_seed=seeds[0], missing=missing)
    with open(os.path.join(out, 'REPORT.md')) as f:
        print(f.read())
