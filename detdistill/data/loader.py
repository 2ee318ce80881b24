"""The data loader: ppdet's dataset and transforms, fed in the order of a
seeded batch sampler, read ahead of the step in a thread (`worker_num: 0`)
or in worker processes, and ending the run on any error instead of hanging
it.

Paddle's DataLoader hangs on errors both ways. Single-process, an exception
raised in its reading thread by the sampler or a transform escapes that
thread without closing its queue, and the training process waits on the
queue forever (Paddle 3.3 `_DataLoaderIterSingleProcess._thread_loop`
catches only StopIteration). Multi-process, a worker's exception reaches
the main process, but the iterator's shutdown can then block for good in a
`get` on its data queue (seen on a 2-core machine with one core: issue 26).
Here every wait is bounded or watches a stop condition: the reader hands
each exception to the consumer, which raises it with the reader's
traceback; a consumer that stops (an error in the step, Ctrl-C) makes the
reader stop at its next put; worker processes are joined with a timeout,
then terminated. Stop signals are deferred around the main thread's queue
operations, so none can leave a queue's lock taken.
"""
import multiprocessing
import os
import pickle
import queue
import random
import signal
import threading
import traceback

import numpy as np
import paddle
from paddle.io import DistributedBatchSampler

from ..logger import get_logger

__all__ = ['build_loader', 'make_loader', 'PrefetchLoader',
           'SeededBatchSampler']

logger = get_logger()

_END = object()
POLL_S = 0.1  # how often a blocked reader or consumer checks the other
JOIN_TIMEOUT_S = 10.


class _Failure:
    """An exception of the reading side, raised by the consumer with the
    reader's traceback: the same object from a thread, or from a worker
    process a copy with the worker's traceback as a note."""

    def __init__(self, exc, trace=None):
        self.exc = exc
        self.trace = trace

    @classmethod
    def in_worker(cls, exc, worker):
        trace = 'in data loader worker {}:\n{}'.format(
            worker, traceback.format_exc())
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - not every exception pickles
            exc = RuntimeError('{}: {}'.format(type(exc).__name__, exc))
        exc.__traceback__ = None
        return cls(exc, trace)

    def raise_(self):
        if self.trace:
            self.exc.add_note(self.trace)
        raise self.exc


class PrefetchLoader:
    """Iterates `batch_sampler`, reads `dataset[i]` for each index, applies
    `collate_fn` and yields batches of Paddle tensors, reading ahead of the
    step: `prefetch` batches in one thread, or `prefetch` per worker in
    `workers` processes. In a thread the data is exactly what Paddle's
    DataLoader produces for the same sampler, dataset and collate function
    (augmentation draws from the global RNGs, seeded per epoch). A worker
    seeds the RNGs of each batch from its position and one number drawn
    from the epoch's seed, so the data is a function of the epoch and not
    of the number of workers or their timing (exact resume)."""

    def __init__(self, dataset, batch_sampler, collate_fn, prefetch=2,
                 workers=0):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn
        self.prefetch = prefetch
        self.workers = int(workers)

    def __len__(self):
        return len(self.batch_sampler)

    def start_epoch(self, epoch):
        """The order and augmentation of epoch `epoch`: the sampler's seed
        (a SeededBatchSampler or MixedBatchSampler) and the dataset's epoch
        (ppdet's mixup reads it)."""
        self.batch_sampler.start_epoch(epoch)
        if hasattr(self.dataset, 'set_epoch'):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        if self.workers > 0:
            return self._from_processes()
        return self._from_thread()

    # -- one reading thread -------------------------------------------------
    def _read(self, out, stop):
        try:
            for indices in self.batch_sampler:
                batch = self.collate_fn([self.dataset[i] for i in indices])
                if not _put(out, batch, stop):
                    return
            _put(out, _END, stop)
        except BaseException as e:  # noqa: B902  every failure must surface
            _put(out, _Failure(e), stop)

    def _from_thread(self):
        from ..engine.interrupt import deferred
        out, stop = queue.Queue(self.prefetch), threading.Event()
        reader = threading.Thread(target=self._read, args=(out, stop),
                                  daemon=True, name='detdistill-loader')
        reader.start()
        try:
            while True:
                try:
                    with deferred():  # see _from_processes
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
                    item.raise_()  # keeps the reading thread's traceback
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

    # -- worker processes ---------------------------------------------------
    def _from_processes(self):
        from ..engine.interrupt import deferred
        ctx = multiprocessing.get_context('fork')  # the dataset is not sent
        base_seed = int(np.random.randint(0, 2**31))  # after epoch seeding
        tasks = [ctx.Queue() for _ in range(self.workers)]
        results, stop = ctx.Queue(), _SharedFlag(ctx)
        procs = [ctx.Process(
            target=_worker, args=(self.dataset, self.collate_fn, tasks[w],
                                  results, stop, base_seed, w, os.getpid()),
            daemon=True, name='detdistill-loader-{}'.format(w))
            for w in range(self.workers)]
        started = []
        try:
            # A Ctrl-C or SIGTERM during the forks waits for their end: raised
            # inside fork's own handlers (logging's lock release after a
            # fork), it would be printed and ignored, and the run would go
            # on; and a worker gets it (the whole process group does) before
            # it ignores signals. Workers started before a stop are stopped
            # by the `finally` (they ignore SIGTERM: none may be left for
            # the interpreter's exit to wait on).
            with deferred():
                for p in procs:
                    p.start()
                    started.append(p)
            # Results reach this process through a thread: a worker killed
            # in the middle of a message would block a read for good, and
            # only a helper thread, not the loop, may wait in a read without
            # a bound.
            inbox = queue.Queue()
            threading.Thread(target=_forward, args=(results, inbox, stop),
                             daemon=True,
                             name='detdistill-loader-inbox').start()
            order = iter(self.batch_sampler)
            sent, done, waiting = 0, 0, {}
            # A stop signal raises its exception wherever the main thread
            # is, also just after a queue's lock was taken and before the
            # `with` that releases it (CPython checks signals between the
            # two). The lock stays taken, and the next put, the queue's
            # close or the interpreter's exit waits on it for good (a CI
            # hang). So every queue operation of this thread runs with stop
            # signals deferred to its end.
            def send():
                nonlocal sent
                indices = next(order, None)
                if indices is not None:
                    with deferred():
                        tasks[sent % len(tasks)].put((sent, list(indices)))
                    sent += 1
            for _ in range(self.prefetch * self.workers):
                send()
            while done < sent:
                if done not in waiting:
                    try:
                        with deferred():
                            k, item = inbox.get(timeout=POLL_S)
                    except queue.Empty:
                        _check_alive(procs)
                        continue
                    waiting[k] = item
                    continue
                item = waiting.pop(done)
                done += 1
                if isinstance(item, _Failure):
                    item.raise_()
                send()
                yield _to_tensors(item)
        finally:
            with deferred():  # a second Ctrl-C must not cut it short
                _stop_workers(started, tasks + [results], stop)


def _worker(dataset, collate_fn, tasks, results, stop, base_seed, worker,
            parent):
    """A loader process: (k, indices) -> (k, batch or _Failure) until told
    to stop, its parent is gone, or None arrives."""
    # Ctrl-C, and a launcher's SIGTERM, reach the whole process group: the
    # parent handles them and stops the workers, which must not die in the
    # middle of a message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    results.cancel_join_thread()  # exiting never waits on the result pipe
    while not stop.is_set():
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None:
            return
        k, indices = task
        seed = (base_seed * 1000003 + k) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        try:
            out = collate_fn([dataset[i] for i in indices])
        except BaseException as e:  # noqa: B902  every failure must surface
            out = _Failure.in_worker(e, worker)
        results.put((k, out))


def _forward(results, inbox, stop):
    while not stop.is_set():
        try:
            inbox.put(results.get(timeout=POLL_S))
        except queue.Empty:
            continue
        except (EOFError, OSError, ValueError):  # closed: the loader ended
            return


def _check_alive(procs):
    dead = [p for p in procs if p.exitcode is not None]
    if dead:
        raise RuntimeError('data loader worker {} (pid {}) ended with exit '
                           'code {} without a result (killed, or out of '
                           'memory?)'.format(dead[0].name, dead[0].pid,
                                             dead[0].exitcode))


class _SharedFlag:
    """The workers' stop flag: a byte of shared memory, read without a lock.
    A multiprocessing Event takes a lock shared with the workers to be read,
    so a worker killed while reading it would leave setting it blocked for
    good."""

    def __init__(self, ctx):
        self._value = ctx.RawValue('b', 0)

    def set(self):
        self._value.value = 1

    def is_set(self):
        return bool(self._value.value)


def _stop_workers(procs, queues, stop):
    """Ask, then make: the stop flag and a None each, a bounded join,
    terminate, kill. Queues are closed without waiting for their pipes."""
    stop.set()
    for q in queues:
        q.cancel_join_thread()
    for q in queues[:len(procs)]:
        try:
            q.put_nowait(None)  # the worker ends now, not at its next look
        except (ValueError, OSError, queue.Full):
            pass
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            logger.warning('data loader worker {} did not stop within {} s: '
                           'terminating it'.format(p.name, JOIN_TIMEOUT_S))
            p.terminate()
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join(JOIN_TIMEOUT_S)
    for q in queues:
        q.close()


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


class SeededBatchSampler(DistributedBatchSampler):
    """The reader's batch sampler (shuffle, drop_last, split across ranks)
    whose order for epoch e is drawn from `epoch_seed(e)`."""

    def __init__(self, dataset, batch_size, shuffle, drop_last, epoch_seed):
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle,
                         drop_last=drop_last)
        self.epoch_seed = epoch_seed

    def start_epoch(self, epoch):
        self.set_epoch(self.epoch_seed(epoch))


def build_loader(reader, dataset, worker_num, batch_sampler=None,
                 epoch_seed=None):
    """ppdet's BaseDataLoader.__call__ (TrainReader, EvalReader, TestReader)
    without its flaws: it starts an iterator (prefetch thread or workers) at
    once, which draws random numbers concurrently with the first epoch and
    breaks exact resume; and its Paddle DataLoader can hang on errors (see
    above). Here batches are read only when the loop iterates, after
    seeding, by PrefetchLoader. `batch_sampler` defaults to the reader's own
    (shuffle, drop_last, split across ranks), its order for epoch e drawn
    from `epoch_seed(e)` when given."""
    dataset.check_or_download_dataset()
    dataset.parse_dataset()
    dataset.set_transform(reader._sample_transforms)
    dataset.set_kwargs(**reader.kwargs)
    if batch_sampler is None and epoch_seed is not None:
        batch_sampler = SeededBatchSampler(
            dataset, reader.batch_size, reader.shuffle, reader.drop_last,
            epoch_seed)
    elif batch_sampler is None:
        batch_sampler = DistributedBatchSampler(
            dataset, batch_size=reader.batch_size, shuffle=reader.shuffle,
            drop_last=reader.drop_last)
    return make_loader(dataset, batch_sampler, reader._batch_transforms,
                       worker_num, reader.batch_size)


def make_loader(dataset, batch_sampler, collate_fn, worker_num, batch_size):
    """A PrefetchLoader reading in a thread, or in `worker_num` processes."""
    loader = PrefetchLoader(dataset, batch_sampler, collate_fn,
                            workers=worker_num)
    loader.batch_size = batch_size
    return loader
