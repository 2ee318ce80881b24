"""Draw detections: python tools/infer.py -c CFG -o weights=W
--infer_img IMG | --infer_dir DIR [--output_dir output] [--draw_threshold 0.5]

An exported model (tools/export_model.py) instead of a config and weights:
python tools/infer.py --model_dir output_inference/CFG_NAME
[--backend paddle|onnxruntime] --infer_img IMG | --infer_dir DIR
"""
import os

from detdistill.cli import ArgsParser, load_detector, main_guard
from detdistill.infer import draw_detections, list_images, predict
from detdistill.fileio import read_label_list
from detdistill.logger import get_logger


def parse_args(argv=None):
    p = ArgsParser(config_required=False, description=__doc__)
    p.add_argument('--infer_img', default=None)
    p.add_argument('--infer_dir', default=None)
    p.add_argument('--output_dir', default='output')
    p.add_argument('--draw_threshold', type=float, default=None,
                   help='default 0.5, or infer_cfg.yml\'s with --model_dir')
    p.add_argument('--model_dir', default=None,
                   help='an exported model, run instead of -c/-o weights')
    p.add_argument('--backend', default='paddle',
                   choices=['paddle', 'onnxruntime'],
                   help='with --model_dir: Paddle Inference or ONNX Runtime')
    args = p.parse_args(argv)
    if not args.config and not args.model_dir:
        p.error('one of -c/--config or --model_dir is required')
    return args


def _dygraph(args, images):
    cfg, detector = load_detector(args)
    return predict(cfg, detector, images), read_label_list(cfg['TestDataset']['anno_path']), 0.5


def _exported(args, images):
    from detdistill.deploy.predictor import ExportedDetector
    model = ExportedDetector(args.model_dir, args.backend)
    return model.predict(images), model.label_list, model.draw_threshold


@main_guard
def main(argv=None):
    args = parse_args(argv)
    images = list_images(args.infer_img, args.infer_dir)
    results, names, threshold = (_exported if args.model_dir else _dygraph)(
        args, images)
    if args.draw_threshold is not None:
        threshold = args.draw_threshold
    written = []
    for path, dets in results:
        out = os.path.join(args.output_dir, os.path.basename(path))
        n = draw_detections(path, dets, names, out, threshold)
        get_logger().info('{} detections above {} -> {}'.format(
            n, threshold, out))
        written.append(out)
    return written


if __name__ == '__main__':
    main()
