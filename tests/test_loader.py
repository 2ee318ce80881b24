"""The training loader: any non-negative seed works, and it yields what
Paddle's DataLoader yields (a failing transform: tests/test_stop.py)."""
import numpy as np
import paddle
import pytest

from conftest import STUDENT, tiny_opts
from detdistill.errors import ConfigError
from detdistill.config import load_config
from detdistill.engine import Trainer

def _train(demo_voc, save, seed):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, save, 1, seed=seed))
    trainer = Trainer(cfg)
    trainer.train()
    return {k: v.numpy() for k, v in trainer.detector.state_dict().items()}


def test_large_seeds_train_deterministically(demo_voc, tmp_path):
    """numpy refuses seeds from 2**32 up; seed * 100003 + epoch reached that
    from seed 42950 and hung the loader. Now any seed works, reproducibly."""
    big = 2**40 + 12345
    a = _train(demo_voc, str(tmp_path / 'a'), big)
    b = _train(demo_voc, str(tmp_path / 'b'), big)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    other = _train(demo_voc, str(tmp_path / 'c'), 50000)
    assert any(not np.array_equal(a[k], other[k]) for k in a)


def test_negative_seed_is_refused(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), seed=-1))
    with pytest.raises(ConfigError, match='seed must be a non-negative'):
        Trainer(cfg)


def test_loader_batches_equal_paddle_dataloader(demo_voc, tmp_path):
    """The prefetching loader yields what paddle.io.DataLoader yields for the
    same sampler, dataset and collate function (so exact resume and the
    benchmark's data order are unchanged)."""
    from detdistill.engine.trainer import seed_everything
    trainer = Trainer(load_config(STUDENT, tiny_opts(demo_voc,
                                                     str(tmp_path))))
    ours = trainer.loader

    def epoch(loader):
        seed_everything(5)
        loader.batch_sampler.set_epoch(5)
        return [{k: v.numpy() for k, v in b.items() if k != 'curr_iter'}
                for b in loader]
    a = epoch(ours)
    b = epoch(paddle.io.DataLoader(
        ours.dataset, batch_sampler=ours.batch_sampler,
        collate_fn=ours.collate_fn, num_workers=0, return_list=False,
        use_shared_memory=False))
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


def _epoch_batches(loader, epoch=5):
    from detdistill.engine.trainer import seed_everything
    seed_everything(epoch)
    loader.batch_sampler.set_epoch(epoch)
    return [{k: v.numpy() for k, v in b.items() if k != 'curr_iter'}
            for b in loader]


def test_worker_processes_give_the_same_batches_whatever_their_number(
        demo_voc, tmp_path):
    """Each batch is seeded from the epoch and its position, so one worker
    and three give identical batches (exact resume does not depend on
    worker_num or timing), and the augmentation does draw randoms."""
    def batches(workers, epoch=5):
        cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path),
                                             worker_num=workers))
        return _epoch_batches(Trainer(cfg).loader, epoch)
    one, three = batches(1), batches(3)
    assert len(one) == len(three) == 8
    for x, y in zip(one, three):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    other_epoch = batches(3, epoch=6)
    assert any(not np.array_equal(x['image'], y['image'])
               for x, y in zip(one, other_epoch))


def test_a_killed_worker_ends_the_epoch_with_an_error(demo_voc, tmp_path):
    """A worker that dies without a result (killed, out of memory) is named
    instead of waited for."""
    import multiprocessing
    import os
    import signal
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path),
                                         worker_num=1))
    batches = iter(Trainer(cfg).loader)
    next(batches)
    workers = [p for p in multiprocessing.active_children()
               if p.name.startswith('detdistill-loader-')]
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r'data loader worker '
                       r'detdistill-loader-0 \(pid \d+\) ended with exit '
                       r'code -9 without a result'):
        for _ in batches:
            pass
    assert not [p for p in multiprocessing.active_children()
                if p.name.startswith('detdistill-loader-')]
