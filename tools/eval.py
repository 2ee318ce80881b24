"""Evaluate: python tools/eval.py -c CFG -o weights=W  (VOC mAP@0.5, 11-point
and area, per-class AP). An exported model on the config's EvalDataset:
python tools/eval.py -c CFG --model_dir DIR [--backend paddle|onnxruntime]"""
import json

from detdistill.cli import ArgsParser, main_guard
from detdistill.config import load_config
from detdistill.engine import Trainer
from detdistill.quant.checkpoint import load_any_weights


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--json', default=None,
                   help='also write the results to this JSON file')
    p.add_argument('--model_dir', default=None,
                   help='evaluate this exported model instead of -o weights')
    p.add_argument('--backend', default='paddle',
                   choices=['paddle', 'onnxruntime'])
    return p.parse_args(argv)


def format_table(res):
    lines = ['{:<16}{:>10}{:>10}'.format('class', 'AP 11pt', 'AP area')]
    for name, ap in res['per_class'].items():
        lines.append('{:<16}{:>10}{:>10}'.format(name, *(
            '{:.2f}'.format(100 * ap[k]) if k in ap else '-'
            for k in ('11point', 'area'))))
    lines.append('{:<16}{:>10.2f}{:>10.2f}'.format(
        'mAP', 100 * res['mAP']['11point'], 100 * res['mAP']['area']))
    return '\n'.join(lines)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    if args.model_dir:
        from detdistill.deploy.evaluate import evaluate_exported
        from detdistill.deploy.predictor import ExportedDetector
        res = evaluate_exported(cfg, ExportedDetector(args.model_dir,
                                                      args.backend))
    else:
        trainer = Trainer(cfg, mode='eval')
        # float weights or tools/quantize.py's INT8 checkpoint
        load_any_weights(trainer.detector, cfg['weights'])
        res = trainer.evaluate()
    print(format_table(res))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
