"""The training data loader: ppdet's dataset and transforms, fed in the order
of a seeded batch sampler, with errors that stop the run instead of hanging
it.

Paddle's single-process DataLoader reads batches in a thread; an exception
raised there by the sampler or a transform (one odd image, a seed numpy
refuses) escapes that thread without closing its queue, and the training
process waits on the queue forever (Paddle 3.3 `_DataLoaderIterSingleProcess.
_thread_loop` catches only StopIteration). A hung job holds a GPU for nothing.
Here the reading thread hands every exception to the consumer, which raises
it with its original traceback. With `worker_num > 0` Paddle's multi-process
loader is used: it re-raises worker exceptions itself (tested).
"""
import queue
import threading

import numpy as np
import paddle
from paddle.io import DistributedBatchSampler

from ..logger import get_logger

__all__ = ['build_loader', 'make_loader', 'PrefetchLoader']

logger = get_logger()

_END = object()
POLL_S = 0.1  # how often a blocked reader or consumer checks the other
JOIN_TIMEOUT_S = 10.


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class PrefetchLoader:
    """Iterates `batch_sampler`, reads `dataset[i]` for each index and
    applies `collate_fn`, `prefetch` batches ahead in one thread (so loading
    overlaps the step, as Paddle's reader thread did), and yields batches of
    Paddle tensors. The data produced is exactly what Paddle's DataLoader
    produces for the same sampler, dataset and collate function."""

    def __init__(self, dataset, batch_sampler, collate_fn, prefetch=2):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn
        self.prefetch = prefetch

    def __len__(self):
        return len(self.batch_sampler)

    def _read(self, out, stop):
        try:
            for indices in self.batch_sampler:
                batch = self.collate_fn([self.dataset[i] for i in indices])
                if not _put(out, batch, stop):
                    return
            _put(out, _END, stop)
        except BaseException as e:  # noqa: B902  every failure must surface
            _put(out, _Failure(e), stop)

    def __iter__(self):
        out, stop = queue.Queue(self.prefetch), threading.Event()
        reader = threading.Thread(target=self._read, args=(out, stop),
                                  daemon=True, name='detdistill-loader')
        reader.start()
        try:
            while True:
                try:
                    item = out.get(timeout=POLL_S)
                except queue.Empty:
                    # Reading a batch may take long (a slow disk); a reader
                    # that died without a word may not.
                    if reader.is_alive():
                        continue
                    raise RuntimeError('the data loader thread ended '
                                       'without a batch, an end or an error')
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc  # keeps the reading thread's traceback
                yield _to_tensors(item)
        finally:
            # The consumer stopped (end, error, Ctrl-C, abandoned epoch): the
            # reader sees `stop` at its next put. It may be inside a long
            # transform; it is a daemon, so the process never waits for it.
            stop.set()
            reader.join(JOIN_TIMEOUT_S)
            if reader.is_alive():
                logger.warning('the data loader thread is still reading a '
                               'batch after {} s; not waiting for it'.format(
                                   JOIN_TIMEOUT_S))


def _put(out, item, stop):
    """Put `item` unless the consumer has stopped: False then. Never blocks
    for good, so a consumer that raises while the queue is full does not
    leave the reader waiting for room nobody will make."""
    while not stop.is_set():
        try:
            out.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _to_tensors(batch):
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_tensors(v) for v in batch)
    if isinstance(batch, np.ndarray):
        return paddle.to_tensor(batch)
    return batch


def build_loader(reader, dataset, worker_num, batch_sampler=None):
    """ppdet's BaseDataLoader.__call__ (TrainReader, EvalReader, TestReader)
    without its two flaws: it starts an iterator (prefetch thread or
    workers) at once, which draws random numbers concurrently with the first
    epoch and breaks exact resume; and with `worker_num: 0` it reads through
    Paddle's single-process DataLoader, which hangs when a transform raises.
    Here batches are read only when the loop iterates, after seeding, by
    PrefetchLoader. `batch_sampler` defaults to the reader's own (shuffle,
    drop_last, split across ranks)."""
    dataset.check_or_download_dataset()
    dataset.parse_dataset()
    dataset.set_transform(reader._sample_transforms)
    dataset.set_kwargs(**reader.kwargs)
    if batch_sampler is None:
        batch_sampler = DistributedBatchSampler(
            dataset, batch_size=reader.batch_size, shuffle=reader.shuffle,
            drop_last=reader.drop_last)
    return make_loader(dataset, batch_sampler, reader._batch_transforms,
                       worker_num, reader.batch_size)


def make_loader(dataset, batch_sampler, collate_fn, worker_num, batch_size):
    """Our PrefetchLoader, or Paddle's multi-process loader with
    `worker_num` workers."""
    if worker_num:
        loader = paddle.io.DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
            num_workers=worker_num, return_list=False,
            use_shared_memory=False)
    else:
        loader = PrefetchLoader(dataset, batch_sampler, collate_fn)
    loader.batch_size = batch_size
    return loader
