"""Seeds: the model's initialisation from the config's `seed`, and each
epoch's data order and augmentation from (seed, epoch) alone, so that a
resumed run sees exactly the batches an uninterrupted one would."""
import random

import numpy as np
import paddle

from .errors import ConfigError

__all__ = ['run_seed', 'seed_everything', 'epoch_seed']


def run_seed(cfg):
    """The config's `seed` (default 0), checked."""
    seed = cfg.get('seed', 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError('seed must be a non-negative integer, got '
                          '{!r}'.format(seed))
    return seed


def seed_everything(seed):
    # numpy (and the batch sampler's RandomState) take seeds below 2**32;
    # reducing keeps every seed valid and small seeds unchanged.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed % 2**32)


def epoch_seed(seed, epoch):
    """The seed of one epoch's data order and augmentation."""
    return (seed * 100003 + epoch) % 2**32
