"""Does distillation pay off on my data?

python tools/payoff.py -c STUDENT.yml -t TEACHER.yml --teacher_pretrained W \
    [--seeds 0,1,2] [--jobs N] [--out output/payoff] [-o k=v ...]

Evaluates the teacher on the student's eval set, trains the student alone
(tools/train.py) and distilled (slim/distillation/distill.py, with the
config's Distill settings) at each seed, and prints teacher / baseline /
distilled mAP, the gap recovered, the seed spread and a verdict: pays off,
no clear difference, or worse than normal training. Writes payoff.md,
payoff.json and map_curves.png into --out. -o overrides apply to every run
(e.g. -o epoch=20, or -o Distill.losses.l2.weight=100 for the distilled
row). Finished runs are reused: rerun with more seeds to add them.
"""
import argparse
import os
import sys


from bench.payoff import payoff_profile, run_payoff
from detdistill.cli import main_guard


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('-c', '--config', required=True, help='student config')
    p.add_argument('-t', '--teacher_config', required=True)
    p.add_argument('--teacher_pretrained', required=True,
                   help='teacher weights (a path; a URL is downloaded by '
                        'distill.py as usual)')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--jobs', type=int, default=1,
                   help='runs trained at once (1 on a single GPU; on a CPU '
                        'a run uses one core)')
    p.add_argument('--out', default='output/payoff')
    p.add_argument('-o', '--opt', nargs='*', default=[],
                   help='config overrides for every run')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(',')]
    profile = payoff_profile(args.config, args.teacher_config,
                             args.teacher_pretrained, args.out, args.opt)
    command = 'python tools/payoff.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    stats, word, why = run_payoff(profile, seeds, args.jobs, args.opt,
                                  command)
    with open(os.path.join(args.out, 'payoff.md')) as f:
        print(f.read())
    return stats, word, why


if __name__ == '__main__':
    main()
