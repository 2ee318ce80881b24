"""Profile the CPU training step: eager vs paddle.jit.to_static vs bfloat16
AMP, DataLoader workers, and several training processes at once. Prints the
figures and writes them to benchmark/PROFILE.md.

python tools/profile_step.py [--repeats 10] [--jobs 2] [--out benchmark/PROFILE.md]
"""
import argparse
import json
import os
import sys

import _path  # noqa: F401

from detdistill import profiling


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                   help='processes started together for the parallel-run '
                   'measurement (default: one per core)')
    p.add_argument('--out', default='benchmark/PROFILE.md')
    args = p.parse_args(argv)
    res = profiling.profile(args.repeats, args.jobs)
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(os.path.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(res, f, indent=1)
    cmd = 'python tools/profile_step.py ' + ' '.join(
        argv if argv is not None else sys.argv[1:])
    print(profiling.write_profile(res, args.out, cmd.strip()))


if __name__ == '__main__':
    main()
