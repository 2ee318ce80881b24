"""Train a detector: python tools/train.py -c CFG [--eval] [-r CKPT] [-o k=v]
[--pretrained W] [--use_vdl --vdl_log_dir DIR]"""
import _path  # noqa: F401

from detdistill.cli import TrainArgsParser, main_guard, run_training
from detdistill.config import load_config
from detdistill.engine import Trainer


@main_guard
def main(argv=None):
    args = TrainArgsParser(description=__doc__).parse_args(argv)
    trainer = Trainer(load_config(args.config, args.opt), mode='train')
    run_training(trainer, args)
    return trainer


if __name__ == '__main__':
    main()
