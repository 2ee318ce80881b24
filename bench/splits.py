"""Data splits a catalogue row can read (its `split:`), written into the
profile's training data directory before the row runs."""
import os
import random

from detdistill.fileio import atomic_write

__all__ = ['SPLITS', 'write_half_split']


def write_half_split(data_dir, seed=0):
    """trainval_half.txt (half of trainval.txt, drawn with `seed`) and
    unlabeled_half.txt (the other half's images, without annotations) in
    `data_dir`; the same files for the same trainval.txt."""
    with open(os.path.join(data_dir, 'trainval.txt')) as f:
        lines = [line for line in f if line.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    half = len(lines) // 2
    labeled, unlabeled = sorted(order[:half]), sorted(order[half:])
    atomic_write(os.path.join(data_dir, 'trainval_half.txt'),
                 ''.join(lines[i] for i in labeled))
    atomic_write(os.path.join(data_dir, 'unlabeled_half.txt'),
                 ''.join(lines[i].split()[0] + '\n' for i in unlabeled))


# split name (catalogue.yaml `splits:`) -> what writes it into a directory
SPLITS = {'half': write_half_split}
