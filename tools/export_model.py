"""Export for deployment: python tools/export_model.py -c CFG -o weights=W
[--output_dir output_inference] [--exclude_nms] [--onnx] [--check_dir DIR]

Writes OUTPUT_DIR/<config name>/: model.json + model.pdiparams (Paddle
Inference), infer_cfg.yml and, with --onnx, model.onnx; each is run on a few
images and compared with the dygraph model before the export counts as done.
"""
import os

from detdistill.cli import ArgsParser, load_detector, main_guard
from detdistill.deploy.export import export
from detdistill.infer import list_images


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--output_dir', default='output_inference')
    p.add_argument('--exclude_nms', action='store_true',
                   help='export without NMS: outputs the decoded boxes and '
                        'scores (NMS settings go to infer_cfg.yml)')
    p.add_argument('--onnx', action='store_true',
                   help='also write model.onnx (paddle2onnx)')
    p.add_argument('--check_dir', default=None,
                   help='images for the export check (the first 4); '
                        'default: random images')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg, detector = load_detector(args)
    images = list_images(infer_dir=args.check_dir)[:4] if args.check_dir \
        else None
    save_dir = os.path.join(args.output_dir, cfg['filename'])
    export(detector, cfg, save_dir, exclude_nms=args.exclude_nms,
           onnx=args.onnx, check_images=images)
    return save_dir


if __name__ == '__main__':
    main()
