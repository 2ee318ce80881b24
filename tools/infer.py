"""Draw detections: python tools/infer.py -c CFG -o weights=W
--infer_img IMG | --infer_dir DIR [--output_dir output] [--draw_threshold 0.5]
"""
import os

import _path  # noqa: F401

from detdistill.cli import ArgsParser, main_guard
from detdistill.config import build_model, load_config
from detdistill.engine import set_device
from detdistill.infer import draw_detections, list_images, predict
from detdistill.logger import get_logger
from detdistill.weights import load_weights


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--infer_img', default=None)
    p.add_argument('--infer_dir', default=None)
    p.add_argument('--output_dir', default='output')
    p.add_argument('--draw_threshold', type=float, default=0.5)
    return p.parse_args(argv)


def read_label_list(cfg):
    path = cfg['TestDataset'].get('anno_path')
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    set_device(cfg)
    detector = build_model(cfg)
    load_weights(detector, cfg['weights'])
    names = read_label_list(cfg)
    written = []
    for path, dets in predict(cfg, detector, list_images(args.infer_img,
                                                         args.infer_dir)):
        out = os.path.join(args.output_dir, os.path.basename(path))
        n = draw_detections(path, dets, names, out, args.draw_threshold)
        get_logger().info('{} detections above {} -> {}'.format(
            n, args.draw_threshold, out))
        written.append(out)
    return written


if __name__ == '__main__':
    main()
