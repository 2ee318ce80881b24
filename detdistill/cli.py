"""Command-line plumbing shared by tools/*.py and slim/distillation/distill.py:
PaddleDetection's flags (-c, -o key=value, ...) and one-line errors."""
import argparse
import functools
import signal
import sys

from .engine import interrupt
from .errors import DetDistillError
from .logger import get_logger

__all__ = ['ArgsParser', 'TrainArgsParser', 'name_value', 'load_detector',
           'run_training',
           'main_guard']


class ArgsParser(argparse.ArgumentParser):
    def __init__(self, config_required=True, **kwargs):
        super().__init__(**kwargs)
        self.add_argument('-c', '--config', required=config_required,
                          help='configuration file (YAML, may use _BASE_)')
        self.add_argument('-o', '--opt', nargs='*', default=[],
                          help='override config options: key=value, '
                               'Module.arg=value')


class TrainArgsParser(ArgsParser):
    """tools/train.py's flags; distill.py adds the teacher's."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_argument('--eval', action='store_true',
                          help='evaluate at every snapshot, keep best_model')
        self.add_argument('-r', '--resume', default=None,
                          help='checkpoint prefix to resume from, e.g. '
                               'output/x/9')
        self.add_argument('--pretrained', default=None,
                          help='weights to start from (path or URL); '
                               'overrides pretrain_weights in the config')
        self.add_argument('--use_vdl', action='store_true',
                          help='VisualDL scalars')
        self.add_argument('--vdl_log_dir', default='vdl_log_dir/scalar')


def name_value(text):
    """argparse type of NAME=VALUE arguments: (NAME, VALUE), or a usage
    error naming the argument."""
    if '=' not in text:
        raise argparse.ArgumentTypeError(
            'expected NAME=VALUE, got {!r}'.format(text))
    return tuple(text.split('=', 1))


def load_detector(args):
    """-c/-o -> (config, its detector on the configured device with the
    config's `weights` loaded): what the inference-side tools start with."""
    from .config import build_model, load_config
    from .engine import set_device
    from .quant.checkpoint import load_any_weights
    cfg = load_config(args.config, args.opt)
    set_device(cfg)
    detector = build_model(cfg)
    load_any_weights(detector, cfg['weights'])  # float or INT8 (quantize.py)
    return cfg, detector


def run_training(trainer, args, callbacks=(), load_pretrained=True):
    """Callbacks (`callbacks` first, then the defaults), then resume (-r) or
    start from pretrained weights (unless `load_pretrained` is False: the
    model starts from the weights it has, as QAT does), then train: the
    part tools/train.py, distill.py and quantize.py share."""
    from .engine import default_callbacks
    from .engine.checkpoint import latest_checkpoint
    from .weights import load_pretrain
    trainer.callbacks = list(callbacks) + default_callbacks(
        trainer.cfg, args.use_vdl, args.vdl_log_dir)
    if args.resume:
        trainer.resume(args.resume)
    elif load_pretrained:
        load_pretrain(trainer.detector, args.pretrained or
                      trainer.cfg.get('pretrain_weights'))
    try:
        return trainer.train(validate=args.eval)
    except KeyboardInterrupt:
        last = latest_checkpoint(trainer.output_dir)
        get_logger().error(
            'Training stopped at step {} (epoch {}); nothing of the '
            'unfinished epoch was saved. {}'.format(
                trainer.state['step'], trainer.state['epoch'],
                'Resume with -r {}'.format(last) if last else
                'No epoch had finished: nothing to resume from.'))
        raise


def main_guard(fn):
    """A tool's main: user errors as one line and exit 1; Ctrl-C and SIGTERM
    unwind the run (engine/interrupt.py) and exit 128 + the signal."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with interrupt.installed():
                out = fn(*args, **kwargs)
                interrupt.check()  # a signal that waited out Paddle's code
                return out
        except (DetDistillError, FileNotFoundError) as e:
            get_logger().error('{}: {}'.format(type(e).__name__, e))
            sys.exit(1)
        except KeyboardInterrupt as e:
            e = e if isinstance(e, interrupt.Interrupted) else \
                interrupt.Interrupted(signal.SIGINT)
            get_logger().error('Stopped by {}.'.format(e.name))
            sys.exit(e.exit_code)
    return wrapper
