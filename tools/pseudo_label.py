"""Label images with a (teacher) detector's detections, as VOC XML files:

python tools/pseudo_label.py -c TEACHER_CFG -o weights=W --infer_dir DIR
    --out_dir ANNOTATIONS [--threshold 0.5]

Writes ANNOTATIONS/<image name>.xml for every image of DIR; class names come
from the label list of the config's TestDataset (anno_path).
"""
from detdistill.cli import ArgsParser, load_detector, main_guard
from detdistill.fileio import read_label_list
from detdistill.infer import list_images
from detdistill.logger import get_logger
from detdistill.pseudo_label import write_pseudo_labels


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--infer_dir', required=True, help='images to label')
    p.add_argument('--out_dir', required=True,
                   help='where the VOC XML files go')
    p.add_argument('--threshold', type=float, default=0.5,
                   help='lowest score kept as an object')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg, detector = load_detector(args)
    names = read_label_list(cfg['TestDataset']['anno_path'])
    written = write_pseudo_labels(cfg, detector, list_images(
        infer_dir=args.infer_dir), names, args.out_dir, args.threshold)
    get_logger().info('Wrote {} VOC files ({} objects with score >= {}) to '
                      '{}'.format(len(written), sum(n for _, n in written),
                                  args.threshold, args.out_dir))
    return written


if __name__ == '__main__':
    main()
