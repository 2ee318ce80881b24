"""mAP of a profile's float students and their INT8 versions: PTQ, QAT
without distillation, QAT with distillation (teacher: the float student),
each through the user commands (tools/quantize.py, tools/eval.py), one
float student per seed.

python tools/dev/int8_quality.py --profile converged \
    --weights 0=W0 1=W1 2=W2 --out results/int8/converged [-o k=v ...]
    [--calib_images 64] [--qat_opts epoch=1 LearningRate.base_lr=0.0001]

Writes OUT/quality.json (every mAP, every command) and OUT/QUALITY.md (the
table: mean, seed spread, per seed, difference to the float student);
finished steps are reused from OUT/<seed>/ when run again. Each command's
log is OUT/<seed>/<step>.log.
"""
import argparse
import json
import os
import sys

from bench.catalogue import catalogue
from bench.runs import ensure_data, profile_opts
from bench.watch import run_watched
from detdistill.cli import name_value
from detdistill.fileio import atomic_write

STEPS = ['float', 'ptq', 'qat_no_distill', 'qat_distill']
LABELS = {'float': 'float student (FP32)',
          'ptq': 'PTQ ({calib} calibration images)',
          'qat_no_distill': 'QAT, detection loss alone',
          'qat_distill': 'QAT with distillation (teacher: the float '
                         'student, L2 auto)'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--profile', required=True)
    p.add_argument('--weights', nargs='+', required=True, type=name_value,
                   metavar='SEED=PATH')
    p.add_argument('--out', required=True)
    p.add_argument('--calib_images', type=int, default=64)
    p.add_argument('--qat_opts', nargs='*',
                   default=['epoch=1', 'LearningRate.base_lr=0.0001'])
    p.add_argument('-o', '--opt', nargs='*', default=[])
    return p.parse_args(argv)


def _run(cmd, log):
    """A user command, its output to `log` (a stalled one is stopped:
    bench/watch.py)."""
    code = run_watched(cmd, log)
    if code != 0:
        raise SystemExit('{} failed (exit {}); see {}'.format(
            ' '.join(cmd[:3]), code, log))


def measure_seed(profile, seed, weights, out, args):
    """{step: {'mAP', 'command'}} for one float student."""
    d = os.path.join(out, str(seed))
    os.makedirs(d, exist_ok=True)
    cfg = profile.student
    name = os.path.splitext(os.path.basename(cfg))[0]
    opts = profile_opts(profile, args.opt) + ['save_dir=' + d]
    py = sys.executable
    int8 = {'ptq': os.path.join(d, name + '_ptq', 'int8'),
            'qat_no_distill': os.path.join(d, 'nd', name + '_qat', 'int8'),
            'qat_distill': os.path.join(d, name + '_qat', 'int8')}
    make = {
        'ptq': [py, 'tools/quantize.py', '-c', cfg, '--mode', 'ptq',
                '--calib_images', str(args.calib_images), '-o'] + opts +
               ['weights=' + weights],
        'qat_no_distill': [py, 'tools/quantize.py', '-c', cfg, '--mode',
                           'qat', '--no_distill', '-o'] + opts +
                          ['weights=' + weights, 'save_dir=' +
                           os.path.join(d, 'nd')] + args.qat_opts,
        'qat_distill': [py, 'tools/quantize.py', '-c', cfg, '--mode', 'qat',
                        '-o'] + opts + ['weights=' + weights] +
                       args.qat_opts}
    res = {}
    for step in STEPS:
        res_file = os.path.join(d, step + '.json')
        if not os.path.isfile(res_file):
            if step in make:
                _run(make[step], os.path.join(d, step + '.log'))
            w = int8.get(step, weights)
            _run([py, 'tools/eval.py', '-c', cfg, '--json', res_file, '-o'] +
                 opts + ['weights=' + w],
                 os.path.join(d, step + '_eval.log'))
        with open(res_file) as f:
            res[step] = {'mAP': json.load(f)['mAP'],
                         'command': ' '.join(make.get(step, ['eval only']))}
    return res


def table(results, calib):
    seeds = sorted(results, key=int)
    lines = ['| student | mAP 11-point, mean | seed spread | per seed | '
             'vs float (mean) |', '|---|---|---|---|---|']
    mean = {}
    for step in STEPS:
        vals = [100 * results[s][step]['mAP']['11point'] for s in seeds]
        mean[step] = sum(vals) / len(vals)
        lines.append('| {} | {:.2f} | {:.2f} | {} | {} |'.format(
            LABELS[step].format(calib=calib), mean[step],
            max(vals) - min(vals), ', '.join('{:.2f}'.format(v)
                                             for v in vals),
            '-' if step == 'float' else '{:+.2f}'.format(
                mean[step] - mean['float'])))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    profile = catalogue().profiles[args.profile]
    weights = dict(args.weights)
    ensure_data(profile, args.opt)  # as the benchmark: e.g. BCCD's split
    results = {}
    for seed, w in weights.items():
        results[seed] = measure_seed(profile, seed, w, args.out, args)
        print('seed {}: {}'.format(seed, {k: round(
            100 * v['mAP']['11point'], 2) for k, v in
            results[seed].items()}), flush=True)
    cmd = 'python tools/dev/int8_quality.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    atomic_write(os.path.join(args.out, 'quality.json'), json.dumps(
        {'command': cmd, 'profile': args.profile, 'weights': weights,
         'results': results}, indent=1))
    text = '# INT8 students: {}\n\nProduced by `{}`. mAP@0.5 of the INT8 ' \
        'dygraph networks (what the exports reproduce) on the profile\'s ' \
        'test set; one float student per seed.\n\n{}\n'.format(
            args.profile, cmd, table(results, args.calib_images))
    atomic_write(os.path.join(args.out, 'QUALITY.md'), text)
    print(text)


if __name__ == '__main__':
    main()
