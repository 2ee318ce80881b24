"""Write the synthetic demo dataset (real JPEG + VOC XML + lists):

python tools/dev/make_demo_voc.py [--out dataset/demo_voc] [--num_images 800]
    [--ratio 0.8] [--seed 0] [--unlabeled 0] [--image_size N] [--overwrite]
    [--profile demo|converged|converged_b]
"""
import argparse
import sys
import time

from detdistill.data.demo import DATA_PROFILES, dataset_digest, make_demo_voc
from detdistill.data.voc import VOCDataError, format_summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--out', default='dataset/demo_voc')
    p.add_argument('--num_images', type=int, default=800)
    p.add_argument('--ratio', type=float, default=0.8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--unlabeled', type=int, default=0)
    p.add_argument('--image_size', type=int, default=None,
                   help="default: the profile's (demo: 160)")
    p.add_argument('--profile', default='demo', choices=sorted(DATA_PROFILES),
                   help='how the images are drawn (detdistill/data/demo.py)')
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    tic = time.time()
    try:
        summary = make_demo_voc(args.out, args.num_images, args.ratio,
                                args.seed, args.unlabeled, args.image_size,
                                args.overwrite, args.profile)
    except VOCDataError as e:
        print('error: {}'.format(e), file=sys.stderr)
        sys.exit(1)
    print(format_summary(summary))
    print('wrote {} images to {} in {:.1f}s; content sha256 {}'.format(
        args.num_images, args.out, time.time() - tic,
        dataset_digest(args.out)))
    return summary


if __name__ == '__main__':
    main()
