"""Command-line plumbing shared by tools/*.py and slim/distillation/distill.py:
PaddleDetection's flags (-c, -o key=value, ...) and one-line errors."""
import argparse
import functools
import sys

from .logger import get_logger

__all__ = ['ArgsParser', 'main_guard']


class ArgsParser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_argument('-c', '--config', required=True,
                          help='configuration file (YAML, may use _BASE_)')
        self.add_argument('-o', '--opt', nargs='*', default=[],
                          help='override config options: key=value, '
                               'Module.arg=value')


# Errors a user can fix from the message alone: print it, exit 1, no traceback.
def _user_errors():
    from .config import ConfigError
    from .data.voc import VOCDataError
    from .engine.checkpoint import CheckpointError
    from .engine.trainer import NonFiniteLossError
    from .weights import WeightsDownloadError, WeightsMismatchError
    errors = [ConfigError, VOCDataError, CheckpointError, NonFiniteLossError,
              WeightsDownloadError, WeightsMismatchError, FileNotFoundError]
    try:
        from .distill.pairing import PairingError
        errors.append(PairingError)
    except ImportError:
        pass
    return tuple(errors)


def main_guard(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            get_logger().error('{}: {}'.format(type(e).__name__, e))
            sys.exit(1)
    return wrapper
