"""Time the dataset validation every Trainer start runs, without and with the
validation cache:

python tools/dev/time_validation.py --dataset_dir dataset/demo_voc [--repeat 5]

Validates trainval.txt and test.txt `--repeat` times with an empty cache
(cold: every image decoded) and again right after (warm: unchanged samples
from the cache), in a temporary cache directory; prints the medians and their
ratio. The files are read from the page cache after the first run, so cold
here is a lower bound for a first start after a reboot.
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

from detdistill.data.voc import validate_voc_list


def validate_all(dataset_dir, lists, cache_dir):
    tic = time.perf_counter()
    reports = [validate_voc_list(dataset_dir, name, os.path.join(
        dataset_dir, 'label_list.txt'), cache_dir=cache_dir)
        for name in lists]
    return time.perf_counter() - tic, reports


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--dataset_dir', required=True)
    p.add_argument('--lists', nargs='+', default=['trainval.txt', 'test.txt'])
    p.add_argument('--repeat', type=int, default=5)
    args = p.parse_args(argv)
    cache = tempfile.mkdtemp(prefix='voc_checks')
    cold, warm = [], []
    try:
        for _ in range(args.repeat):
            shutil.rmtree(cache)
            cold.append(validate_all(args.dataset_dir, args.lists, cache))
            warm.append(validate_all(args.dataset_dir, args.lists, cache))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    for name, runs in (('cold', cold), ('warm', warm)):
        reports = runs[-1][1]
        print('{}: median {:.3f} s over {} runs; {} images, {} checked, {} '
              'from the cache'.format(
                  name, statistics.median(t for t, _ in runs), len(runs),
                  sum(r.num_images for r in reports),
                  sum(r.num_checked for r in reports),
                  sum(r.num_cached for r in reports)))
    print('speed-up: {:.1f}x'.format(statistics.median(t for t, _ in cold) /
                                     statistics.median(t for t, _ in warm)))


if __name__ == '__main__':
    main()
