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

__all__ = ['build_loader', 'make_loader', 'PrefetchLoader']

_END = object()


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
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_END)
        except BaseException as e:  # noqa: B902  every failure must surface
            out.put(_Failure(e))

    def __iter__(self):
        out, stop = queue.Queue(self.prefetch), threading.Event()
        reader = threading.Thread(target=self._read, args=(out, stop),
                                  daemon=True, name='detdistill-loader')
        reader.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc  # keeps the reading thread's traceback
                yield _to_tensors(item)
        finally:
            stop.set()  # an abandoned epoch must not leave a reader behind
            reader.join()


def _to_tensors(batch):
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_tensors(v) for v in batch)
    if isinstance(batch, np.ndarray):
        return paddle.to_tensor(batch)
    return batch


def build_loader(reader, dataset, worker_num):
    """ppdet's BaseDataLoader.__call__ without its side effect: it starts an
    iterator (prefetch thread or workers) at once, which draws random numbers
    concurrently with the first epoch and breaks exact resume. Here batches
    are read only when the loop iterates, after seeding."""
    dataset.check_or_download_dataset()
    dataset.parse_dataset()
    dataset.set_transform(reader._sample_transforms)
    dataset.set_kwargs(**reader.kwargs)
    sampler = DistributedBatchSampler(dataset, batch_size=reader.batch_size,
                                      shuffle=reader.shuffle,
                                      drop_last=reader.drop_last)
    return make_loader(dataset, sampler, reader._batch_transforms,
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
