"""Teacher outputs computed once per distinct input image, reused later.

The teacher is frozen and in eval mode, so its output for an image depends on
the image tensor alone. When the training augmentation is deterministic up to
a flip (the demo and converged configs), every epoch after the first shows
the teacher inputs it has already seen, and its forward can be skipped.

Entries are keyed by a hash of the exact bytes the teacher sees (the image
tensor), so a hit is the teacher's output for identical input: no knowledge
of the transforms is needed for correctness; the transform check below only
decides whether the cache can pay. Outputs are stored in float16, and every
output is rounded to float16 whether it comes from the cache or from a fresh
forward, so a run gives the same numbers whatever was cached (an exact resume
after a restart, which starts with an empty cache, depends on it; this needs
the teacher's per-image output to be independent of the other images in its
batch, which holds for an eval-mode CNN and is tested).
"""
import hashlib

import numpy as np
import paddle

from ..logger import get_logger

__all__ = ['TeacherCache', 'cache_blocker', 'build_teacher_cache']

logger = get_logger()

# Transforms whose output is a function of the image and the flip draw (the
# flip doubles the distinct inputs, nothing more).
_DETERMINISTIC = {'Decode', 'RandomFlip', 'Resize', 'NormalizeImage',
                  'Permute', 'NormalizeBox', 'PadBox', 'BboxXYXY2XYWH',
                  'Gt2YoloTarget', 'Gt2GFLTarget', 'Gt2LDTarget', 'PadBatch'}


def cache_blocker(reader_cfg):
    """None if the TrainReader's transforms show each image to the teacher in
    a bounded number of ways, else the name of the first one that does not
    (random crops, expands, colour jitter, multi-scale resizing)."""
    for stage in ('sample_transforms', 'batch_transforms'):
        for t in reader_cfg.get(stage) or []:
            name, args = next(iter(t.items()))
            args = args or {}
            if name == 'BatchRandomResize':
                sizes = args.get('target_size') or []
                if len(sizes) == 1 and not args.get('random_interp', False):
                    continue
                return 'BatchRandomResize (several sizes or random ' \
                    'interpolation)'
            if name not in _DETERMINISTIC:
                return name
    return None


class TeacherCache:
    """{image hash: {output name: float16 array}} within a memory budget."""

    def __init__(self, budget_mb=1024):
        self.budget = int(budget_mb * 2 ** 20)
        self.entries = {}
        self.nbytes = 0
        self.hits = self.misses = 0
        self.full_logged = False

    @staticmethod
    def keys(images):
        arr = np.ascontiguousarray(images.numpy())
        return [hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() +
                str(a.shape) for a in arr]

    def outputs(self, inputs, forward):
        """The teacher's outputs for the batch `inputs`: cached rows where
        the image was seen, `forward(sub_inputs)` on the rest (one call on
        the images not cached yet). Returns {name: float32 tensor}, every
        value rounded to float16."""
        images = inputs['image']
        n = images.shape[0]
        keys = self.keys(images)
        todo = [i for i, k in enumerate(keys) if k not in self.entries]
        self.hits += n - len(todo)
        self.misses += len(todo)
        fresh = {}
        if todo:
            sub = inputs if len(todo) == n else _rows(inputs, todo, n)
            out = forward(sub)
            fresh = {name: v.astype('float16').numpy() for name, v in
                     out.items()}
            for j, i in enumerate(todo):
                self._put(keys[i], {name: v[j] for name, v in fresh.items()})
        names = list(fresh) or list(self.entries[keys[0]])
        pos = {i: j for j, i in enumerate(todo)}
        result = {}
        for name in names:
            rows = [fresh[name][pos[i]] if i in pos else
                    self.entries[keys[i]][name] for i in range(n)]
            result[name] = paddle.to_tensor(
                np.stack(rows).astype('float32'))
        return result

    def _put(self, key, entry):
        size = sum(v.nbytes for v in entry.values())
        if key in self.entries:
            return
        if self.nbytes + size > self.budget:
            if not self.full_logged:
                logger.info('Teacher cache full ({:.1f} MB, {} images): '
                            'images not cached yet will run through the '
                            'teacher every time (teacher_cache_mb raises '
                            'the budget)'.format(self.nbytes / 2 ** 20,
                                                 len(self.entries)))
                self.full_logged = True
            return
        self.entries[key] = entry
        self.nbytes += size

    def summary(self):
        seen = self.hits + self.misses
        return 'teacher cache: {} images, {:.1f} MB, hit rate {:.0%}'.format(
            len(self.entries), self.nbytes / 2 ** 20,
            self.hits / seen if seen else 0.)


def _rows(inputs, idx, n):
    """The rows `idx` of every batch-shaped tensor of `inputs`."""
    index = paddle.to_tensor(idx, dtype='int64')
    return {k: paddle.gather(v, index) if isinstance(v, paddle.Tensor) and
            v.ndim and v.shape[0] == n else v for k, v in inputs.items()}


def build_teacher_cache(mode, budget_mb, reader_cfg):
    """Distill.teacher.cache: auto (on when the TrainReader config
    `reader_cfg` shows each image to the teacher in a bounded number of
    ways) | true | false, within `budget_mb` (Distill.teacher.cache_mb).
    Logs the decision in one line; None when off."""
    if mode is False:
        return None
    blocker = cache_blocker(reader_cfg or {})
    if blocker and mode == 'auto':
        logger.info('Teacher cache off: TrainReader {} changes what the '
                    'teacher sees every epoch'.format(blocker))
        return None
    logger.info('Teacher cache on ({} MB budget): each distinct training '
                'image goes through the teacher once; outputs kept in '
                'float16'.format(budget_mb) + (
                    ' (forced: {} makes hits rare)'.format(blocker)
                    if blocker else ''))
    return TeacherCache(budget_mb)
