"""Unlabeled images for distillation: listed, validated up front, read with
the training augmentation minus what needs boxes, and paired batch by batch
with the labeled stream.

One sampler yields, per step, a labeled batch of indices and an unlabeled
one, and one reading thread (or Paddle's workers) reads both. Two threads
would draw augmentation randoms from numpy's global state in an interleaving
that changes from run to run; one thread keeps the whole step stream a
function of (seed, epoch), which exact resume needs.

The unlabeled stream runs independently of the labeled epochs: global step g
takes unlabeled batch g % U of unlabeled epoch g // U (U batches per
unlabeled epoch), and unlabeled epoch u is shuffled with its own seed. The
position of a run at the start of labeled epoch e is thus e * steps_per_epoch:
a resumed run continues the same unlabeled order.
"""
import copy
import os

import numpy as np
from paddle.io import DistributedBatchSampler

from .check_cache import CheckCache
from .loader import build_loader, make_loader
from ..errors import VOCDataError
from ..fileio import IMAGE_EXTS
from .voc import check_image

__all__ = ['read_unlabeled_list', 'list_image_dir', 'validate_images',
           'UnlabeledDataset', 'without_gt_ops', 'MixedBatchSampler',
           'MixedDataset', 'MixedCollate', 'GT_OPS', 'load_unlabeled',
           'build_mixed_loader']

# ppdet transforms that only move, pad or encode ground truth: without boxes
# there is nothing for them to do (and they index gt_bbox unconditionally).
# Everything else (Decode, RandomDistort, RandomExpand, RandomCrop, RandomFlip,
# BatchRandomResize, NormalizeImage, Permute) runs on unlabeled images too.
# Mixup needs a pair of samples, which only the labeled dataset makes: on an
# unlabeled sample it returns the sample unchanged.
GT_OPS = ('NormalizeBox', 'PadBox', 'BboxXYXY2XYWH', 'PadGT', 'Gt2YoloTarget',
          'Gt2FCOSTarget', 'Gt2TTFTarget', 'Gt2GFLTarget', 'Gt2LDTarget',
          'Gt2CenterNetTarget',
          'Gt2Solov2Target', 'Gt2SparseTarget', 'Gt2CenterTrackTarget')

UNLABELED = 'unlabeled_sample'

# Salt of the unlabeled order's seed, so that it is not the labeled order
# when both lists have the same length.
_UNLABELED_SALT = 0x5eed


def read_unlabeled_list(list_path, dataset_dir):
    """Image paths of a list file (`split_voc.py --unlabeled` writes one):
    one path per line, relative to `dataset_dir` unless absolute."""
    if not os.path.isfile(list_path):
        raise VOCDataError('unlabeled list {} does not exist'.format(
            list_path))
    with open(list_path) as f:
        lines = [line.strip() for line in f]
    paths, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        if len(line.split()) != 1:
            problems.append('{} line {}: expected one image path, got {!r} '
                            '(an unlabeled list has no annotation '
                            'column)'.format(list_path, n, line))
            continue
        paths.append(line if os.path.isabs(line) else
                     os.path.join(dataset_dir, line))
    if problems:
        raise VOCDataError('{} problem(s) in {}:\n  {}'.format(
            len(problems), list_path, '\n  '.join(problems)))
    if not paths:
        raise VOCDataError('unlabeled list {} is empty'.format(list_path))
    return paths


def list_image_dir(image_dir):
    """The images (by extension) directly in `image_dir`, sorted by name."""
    if not os.path.isdir(image_dir):
        raise VOCDataError('unlabeled image directory {} does not '
                           'exist'.format(image_dir))
    paths = [os.path.join(image_dir, f) for f in sorted(os.listdir(image_dir))
             if os.path.splitext(f)[1].lower() in IMAGE_EXTS]
    if not paths:
        raise VOCDataError('no images ({}) in {}'.format(
            ', '.join(IMAGE_EXTS), image_dir))
    return paths


def validate_images(paths, source, cache_dir=None):
    """Decode every image (check_image). Images unchanged since they passed
    are taken from the validation cache of `source` (the list file or the
    folder). -> (problems, number checked, number from the cache)."""
    cache = CheckCache(source, [], cache_dir)
    problems, checked, cached = [], 0, 0
    for path in paths:
        # check_cache keys samples by (image, xml); an unlabeled sample is
        # its image alone
        sigs, found = cache.lookup(path, path)
        if found:
            cached += 1
            continue
        checked += 1
        try:
            check_image(path)
        except VOCDataError as e:
            problems.append(str(e))
            continue
        cache.store(path, path, sigs, objects=[], notes=[])
    cache.save()
    return problems, checked, cached


def without_gt_ops(compose):
    """A copy of a ppdet Compose/BatchCompose without the GT_OPS."""
    out = copy.copy(compose)
    out.transforms_cls = [f for f in compose.transforms_cls
                          if type(f).__name__ not in GT_OPS]
    return out


class UnlabeledDataset:
    """Image files as ppdet samples (`im_file`, `im_id`), transformed by the
    training sample transforms."""

    def __init__(self, paths, transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        sample = self.transform({'im_file': self.paths[idx],
                                 'im_id': np.array([idx])})
        # ppdet's RandomCrop crops unlabeled samples around fake boxes
        # (its semi-supervised mode) and leaves them in: drop them, an
        # unlabeled batch holds no ground truth, real or made up
        for key in [k for k in sample if k.startswith('gt_') or
                    k in ('difficult', 'is_crowd')]:
            del sample[key]
        sample[UNLABELED] = True  # for MixedCollate
        return sample


class MixedDataset:
    """Labeled samples at indices [0, N), unlabeled ones at [N, N + M)."""

    def __init__(self, labeled, unlabeled):
        self.labeled, self.unlabeled = labeled, unlabeled

    def __len__(self):
        return len(self.labeled) + len(self.unlabeled)

    def __getitem__(self, idx):
        n = len(self.labeled)
        return self.labeled[idx] if idx < n else self.unlabeled[idx - n]

    def set_epoch(self, epoch):
        if hasattr(self.labeled, 'set_epoch'):
            self.labeled.set_epoch(epoch)


class MixedCollate:
    """Splits a step's samples by the UNLABELED tag and applies each stream's
    batch transforms: -> (labeled batch, unlabeled batch)."""

    def __init__(self, labeled_fn, unlabeled_fn):
        self.labeled_fn, self.unlabeled_fn = labeled_fn, unlabeled_fn

    def __call__(self, samples):
        labeled = [s for s in samples if UNLABELED not in s]
        unlabeled = [s for s in samples if s.pop(UNLABELED, False)]
        return self.labeled_fn(labeled), self.unlabeled_fn(unlabeled)


class MixedBatchSampler:
    """Per step: the labeled sampler's batch, then the next unlabeled batch
    (indices offset by the labeled dataset's length, as in MixedDataset).
    Both samplers shard by rank."""

    def __init__(self, labeled, unlabeled, epoch_seed):
        self.labeled = labeled  # a DistributedBatchSampler
        self.unlabeled = unlabeled  # a DistributedBatchSampler, drop_last
        self.epoch_seed = epoch_seed  # epoch -> seed of its order
        self.offset = len(labeled.dataset)
        self.epoch = 0

    def __len__(self):
        return len(self.labeled)

    @property
    def batch_size(self):
        return self.labeled.batch_size

    def start_epoch(self, epoch):
        """Order of labeled epoch `epoch`, and the unlabeled stream from
        where that epoch starts it."""
        self.epoch = epoch
        self.labeled.set_epoch(self.epoch_seed(epoch))

    def _unlabeled_epoch(self, u):
        self.unlabeled.set_epoch((self.epoch_seed(u) ^ _UNLABELED_SALT) %
                                 2**32)
        return list(self.unlabeled)

    def __iter__(self):
        per_epoch = len(self.unlabeled)
        step = self.epoch * len(self.labeled)
        u, pos = divmod(step, per_epoch)
        order = self._unlabeled_epoch(u)
        for batch in self.labeled:
            if pos == per_epoch:
                u, pos = u + 1, 0
                order = self._unlabeled_epoch(u)
            yield list(batch) + [self.offset + i for i in order[pos]]
            pos += 1


def load_unlabeled(settings, dataset_dir, logger):
    """The image paths of `settings['list']` (lines relative to
    `dataset_dir`) and of `settings['dir']` (Distill.unlabeled: either or
    both), every image decoded before training: VOCDataError lists every
    missing or corrupt file. None when neither is set."""
    sources = []
    if settings.get('list'):
        sources.append((settings['list'], read_unlabeled_list(
            settings['list'], dataset_dir)))
    if settings.get('dir'):
        sources.append((settings['dir'], list_image_dir(settings['dir'])))
    if not sources:
        return None
    paths, problems = [], []
    for source, mine in sources:
        bad, checked, cached = validate_images(mine, source)
        problems += bad
        paths += mine
        logger.info('Validated unlabeled images of {}: {} images; {} '
                    'checked, {} unchanged since they passed'.format(
                        source, len(mine), checked, cached))
    if problems:
        shown = problems[:20]
        raise VOCDataError('{} problem(s) in the unlabeled images of {}:\n  '
                           '{}{}'.format(
                               len(problems),
                               ' and '.join(s for s, _ in sources),
                               '\n  '.join(shown),
                               '\n  ... and {} more'.format(len(problems) - 20)
                               if len(problems) > 20 else ''))
    return paths


def build_mixed_loader(reader, dataset, worker_num, paths, batch_size,
                       epoch_seed):
    """The training loader with an unlabeled batch of `batch_size` images
    per step: it yields (labeled batch, unlabeled batch)."""
    # nothing is read until iter
    labeled = build_loader(reader, dataset, 0, epoch_seed=epoch_seed)
    unlabeled = UnlabeledDataset(paths,
                                 without_gt_ops(reader._sample_transforms))
    sampler = DistributedBatchSampler(unlabeled, batch_size=batch_size,
                                      shuffle=reader.shuffle, drop_last=True)
    if len(sampler) < 1:
        raise VOCDataError(
            'unlabeled_batch_size {} is larger than the {} unlabeled images '
            '{}'.format(batch_size, len(unlabeled), 'per rank ({} ranks)'
                        .format(sampler.nranks) if sampler.nranks > 1
                        else 'given'))
    return make_loader(
        MixedDataset(labeled.dataset, unlabeled),
        MixedBatchSampler(labeled.batch_sampler, sampler, epoch_seed),
        MixedCollate(reader._batch_transforms,
                     without_gt_ops(reader._batch_transforms)),
        worker_num, reader.batch_size)
