"""Split a VOC2012-style dataset into PaddleDetection lists:

python tools/split_voc.py --dataset_dir dataset/voc [--ratio 0.9] [--seed 0]
    [--unlabeled N] [--label_list FILE] [--overwrite]

Reads DATASET_DIR/VOCdevkit/VOC2012/{JPEGImages,Annotations}; writes
trainval.txt, test.txt, label_list.txt (and unlabeled.txt) in DATASET_DIR.
"""
import argparse
import sys

from detdistill.data.voc import VOCDataError, format_summary, split_voc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--dataset_dir', required=True)
    p.add_argument('--ratio', type=float, default=0.9,
                   help='share of labeled images in trainval.txt')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--unlabeled', type=int, default=0,
                   help='hold out N images (without labels) in unlabeled.txt')
    p.add_argument('--label_list', default=None,
                   help='class names, one per line (default: all classes '
                        'found, sorted)')
    p.add_argument('--image_dir', default='VOCdevkit/VOC2012/JPEGImages')
    p.add_argument('--anno_dir', default='VOCdevkit/VOC2012/Annotations')
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    try:
        summary = split_voc(args.dataset_dir, args.ratio, args.seed,
                            args.unlabeled, args.image_dir, args.anno_dir,
                            args.label_list, args.overwrite)
    except VOCDataError as e:
        print('error: {}'.format(e), file=sys.stderr)
        sys.exit(1)
    print(format_summary(summary))
    return summary


if __name__ == '__main__':
    main()
