"""Convert weights once into a .pdparams for a config's model:

python tools/convert_weights.py -c CONFIG --src ARCHIVE_OR_URL_OR_DIR \
    --out FILE.pdparams [-o num_classes=80 ...]

SRC is anything -o weights= accepts; the point is a PaddleDetection 0.5
archive (yolov3_r34_voc.tar, a URL to one, or its extracted folder), read and
renamed to ppdet 2.x names. Every model key must come from SRC and every
tensor of SRC must be used (optimizer state aside): the fit
--teacher_pretrained needs. The report is printed; FILE loads anywhere a
.pdparams does (-o weights=, --pretrained, --teacher_pretrained).
"""
from detdistill.cli import ArgsParser, main_guard
from detdistill.config import build_model, load_config
from detdistill.engine.checkpoint import atomic_save
from detdistill.weights import load_weights


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--src', required=True,
                   help='weights to convert: a file, folder or URL')
    p.add_argument('--out', required=True,
                   help='the .pdparams to write (the suffix is added if '
                        'missing)')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    out = args.out if args.out.endswith('.pdparams') else \
        args.out + '.pdparams'
    model = build_model(load_config(args.config, args.opt))
    report = load_weights(model, args.src, log=lambda line: None)
    atomic_save(model.state_dict(), out)
    print('{}\nwrote {} ({} tensors)'.format(report, out,
                                             len(model.state_dict())))
    return report, out


if __name__ == '__main__':
    main()
