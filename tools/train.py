"""Train a detector: python tools/train.py -c CFG [--eval] [-r CKPT] [-o k=v]
[--pretrained W] [--use_vdl --vdl_log_dir DIR]"""
from detdistill.cli import TrainArgsParser, main_guard, run_training
from detdistill.config import load_config
from detdistill.distill.settings import distill_settings
from detdistill.engine import Trainer, set_device
from detdistill.errors import ConfigError


@main_guard
def main(argv=None):
    args = TrainArgsParser(description=__doc__).parse_args(argv)
    cfg = load_config(args.config, args.opt)
    if distill_settings(cfg).has_unlabeled:
        raise ConfigError('unlabeled images (Distill.unlabeled) train by '
                          'distillation only: use slim/distillation/'
                          'distill.py')
    set_device(cfg)
    trainer = Trainer(cfg, mode='train')
    run_training(trainer, args)
    return trainer


if __name__ == '__main__':
    main()
