"""Profile a profile's CPU training step (bench/speedups.py): eager vs
paddle.jit.to_static vs bfloat16 AMP, DataLoader workers, and several
training processes at once. Prints the figures and writes them to
results/PROFILE.md.

python tools/dev/profile_step.py [--profile demo] [--repeats 10] [--jobs 2]
    [--out results/PROFILE.md]

With --compare_ppdet (bench/peers.py): our distillation step and evaluation
side by side with PaddleDetection's own (DistillModel + DistillYOLOv3Loss,
Trainer.evaluate), in one process, one thread, interleaved; writes
results/TEACHER_SPEED.md.

With --methods (bench/step_cost.py): each distill row's step against the
plain student's, interleaved in one process; writes
results/<profile>/STEP_COST.md (and .json).

python tools/dev/profile_step.py --profile converged --methods l2_auto,cwd
    [--repeats 10] [--teacher_weights converged=PATH]

python tools/dev/profile_step.py --compare_ppdet [--profiles demo,converged]
    [--repeats 10] [--eval_repeats 3] [--teacher_weights demo=PATH ...]
    [--student_weights demo=PATH ...] [--out results/TEACHER_SPEED.md]
"""
import argparse
import json
import os
import sys

from bench import peers, speedups
from bench.catalogue import catalogue
from bench.runs import teacher_weights
from bench.step_cost import method_step_costs, write_method_step_costs
from detdistill.cli import name_value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--profile', default='demo',
                   help="the catalogue profile whose student is profiled "
                   "(bench/catalogue.yaml)")
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='processes started together for the parallel-run '
                   'measurement (default: one per core)')
    p.add_argument('--out', default=None, help='default: '
                   'results/PROFILE.md, or results/TEACHER_SPEED.md with '
                   '--compare_ppdet')
    p.add_argument('--compare_ppdet', action='store_true')
    p.add_argument('--methods', default=None,
                   help='distill rows (bench/catalogue.yaml) whose step '
                   'cost is measured against the plain student')
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='-o overrides of every row (with --methods)')
    p.add_argument('--profiles', default='demo,converged',
                   help='the profiles compared with --compare_ppdet')
    p.add_argument('--eval_repeats', type=int, default=3)
    p.add_argument('--batches', type=int, default=4,
                   help='fixed batches the steps cycle over')
    p.add_argument('--teacher_weights', nargs='*', default=[],
                   metavar='PROFILE=PATH', type=name_value)
    p.add_argument('--student_weights', nargs='*', default=[],
                   metavar='PROFILE=PATH', type=name_value,
                   help='weights evaluated')
    args = p.parse_args(argv)
    cmd = 'python tools/dev/profile_step.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    if args.methods:
        prof = catalogue().profiles[args.profile]
        out = args.out or os.path.join(prof.out, 'STEP_COST.md')
        weights = dict(args.teacher_weights).get(
            prof.name, teacher_weights(prof.out, prof))
        res = method_step_costs(prof, weights, args.methods.split(','),
                                args.repeats, args.opt)
        os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
        write_method_step_costs(res, out, cmd.strip())
        with open(out) as f:
            print(f.read())
        return
    if args.compare_ppdet:
        out = args.out or 'results/TEACHER_SPEED.md'
        res = peers.compare(
            args.profiles.split(','), args.repeats, args.eval_repeats,
            args.batches, dict(args.teacher_weights),
            dict(args.student_weights))
    else:
        out = args.out or 'results/PROFILE.md'
        res = speedups.measure(catalogue().profiles[args.profile],
                               args.repeats, args.jobs)
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
        json.dump(res, f, indent=1)
    write = peers.write_report if args.compare_ppdet else \
        speedups.write_profile
    print(write(res, out, cmd.strip()))


if __name__ == '__main__':
    main()
