"""Train a detector: python tools/train.py -c CFG [--eval] [-r CKPT] [-o k=v]"""
import _path  # noqa: F401

from detdistill.cli import ArgsParser, main_guard
from detdistill.config import load_config
from detdistill.engine import Trainer, default_callbacks
from detdistill.weights import load_pretrain


def parse_args(argv=None):
    p = ArgsParser(description=__doc__)
    p.add_argument('--eval', action='store_true',
                   help='evaluate at every snapshot and keep best_model')
    p.add_argument('-r', '--resume', default=None,
                   help='checkpoint prefix to resume from, e.g. output/x/9')
    p.add_argument('--pretrained', default=None,
                   help='weights to start from (path or URL); overrides '
                        'pretrain_weights in the config')
    p.add_argument('--use_vdl', action='store_true', help='VisualDL logging')
    p.add_argument('--vdl_log_dir', default='vdl_log_dir/scalar')
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.opt)
    trainer = Trainer(cfg, mode='train')
    trainer.callbacks = default_callbacks(cfg, args.use_vdl, args.vdl_log_dir)
    if args.resume:
        trainer.resume(args.resume)
    else:
        load_pretrain(trainer.detector, args.pretrained or
                      cfg.get('pretrain_weights'))
    trainer.train(validate=args.eval)


if __name__ == '__main__':
    main()
