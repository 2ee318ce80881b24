"""The training/evaluation loop: ppdet's components (model, readers, LR
schedule, optimizer, DetectionMAP) driven by a step loop with callbacks.

Why not ppdet's own Trainer: it resumes only at epoch boundaries without
restoring the data order (its sampler's epoch counter restarts), writes
checkpoints non-atomically, calls `model.train()` on a distillation wrapper so
the teacher's BatchNorm statistics drift, and hides NaN losses until eval.
Everything it does well (building, data pipeline, metrics) is reused.
"""
import math
import os
import random
import time

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.io import DistributedBatchSampler
from ppdet.core.workspace import create

from ..config import activate
from ..data.voc import validate_voc_list
from ..logger import get_logger
from .checkpoint import load_checkpoint
from .evaluator import VOCEvaluator

__all__ = ['Trainer', 'NonFiniteLossError', 'set_device']

logger = get_logger()


class NonFiniteLossError(FloatingPointError):
    pass


def set_device(cfg):
    use_gpu = cfg.get('use_gpu', False) and paddle.is_compiled_with_cuda()
    if cfg.get('use_gpu', False) and not use_gpu:
        logger.info('use_gpu is set but Paddle has no CUDA here: running on CPU')
    paddle.set_device('gpu' if use_gpu else 'cpu')
    return use_gpu


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2**32))
    paddle.seed(seed)


def check_dataset(dataset):
    """Validate a VOC list before any compute is spent on it."""
    if type(dataset).__name__ != 'VOCDataSet':
        return
    report = validate_voc_list(dataset.dataset_dir, dataset.anno_path,
                               os.path.join(dataset.dataset_dir,
                                            dataset.label_list))
    logger.info(report.format_counts())
    report.raise_if_problems()
    if report.notes:
        logger.warning(report.format_notes())


def build_loader(reader, dataset, worker_num):
    """ppdet's BaseDataLoader.__call__ without its side effect: it starts an
    iterator (prefetch thread or workers) at once, which draws random numbers
    concurrently with the first epoch and breaks exact resume. Here the
    DataLoader is iterated only by the loop, after seeding."""
    dataset.check_or_download_dataset()
    dataset.parse_dataset()
    dataset.set_transform(reader._sample_transforms)
    dataset.set_kwargs(**reader.kwargs)
    sampler = DistributedBatchSampler(dataset, batch_size=reader.batch_size,
                                      shuffle=reader.shuffle,
                                      drop_last=reader.drop_last)
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler,
                                  collate_fn=reader._batch_transforms,
                                  num_workers=worker_num, return_list=False,
                                  use_shared_memory=False)
    loader.batch_size = reader.batch_size
    return loader


class Trainer:
    """Train (`mode='train'`) or evaluate a detector described by `cfg`.

    `model` may be given instead of built from `cfg['architecture']`; if it has
    a `student` attribute (a distiller), the student is what is optimised,
    evaluated and saved, while `model(data)` supplies the training losses.
    """

    def __init__(self, cfg, mode='train', model=None):
        self.cfg = cfg
        self.mode = mode
        self.use_gpu = set_device(cfg)
        self.seed = int(cfg.get('seed', 0))
        self.output_dir = os.path.join(cfg.get('save_dir', 'output'),
                                       cfg['filename'])
        self.nranks, self.rank = dist.get_world_size(), dist.get_rank()
        if model is None:
            seed_everything(self.seed)
        with activate(cfg):
            self.model = model if model is not None else create(
                cfg['architecture'])
            self.detector = getattr(self.model, 'student', self.model)
            if mode == 'train':
                dataset = create('TrainDataset')()
                check_dataset(dataset)
                self.loader = build_loader(create('TrainReader'), dataset,
                                           cfg.get('worker_num', 0))
                self.steps_per_epoch = len(self.loader)
                if self.steps_per_epoch < 1:
                    raise ValueError(
                        'TrainReader.batch_size {} is larger than the {} '
                        'training images in {}'.format(
                            self.loader.batch_size, len(dataset),
                            dataset.anno_path))
                self.lr = create('LearningRate')(self.steps_per_epoch)
                self.optimizer = create('OptimizerBuilder')(self.lr,
                                                            self.detector)
        self._eval_loader = None
        self.callbacks = []
        self.state = {'epoch': 0, 'step': 0, 'best_map': None,
                      'best_step': None}

    # -- data ---------------------------------------------------------------
    @property
    def eval_loader(self):
        if self._eval_loader is None:
            # VOC ground truth differs in length per image: no collation.
            self.cfg.setdefault('EvalReader', {})['collate_batch'] = False
            with activate(self.cfg):
                dataset = create('EvalDataset')()
                check_dataset(dataset)
                sampler = paddle.io.BatchSampler(
                    dataset, batch_size=self.cfg['EvalReader'].get(
                        'batch_size', 1))
                self._eval_loader = create('EvalReader')(
                    dataset, 0, batch_sampler=sampler)
            self.class_names = _read_labels(dataset)
        return self._eval_loader

    def _epoch_batches(self, epoch):
        # Data order and augmentation are a function of (seed, epoch) only, so
        # a resumed run sees exactly the batches an uninterrupted one would.
        seed_everything(self.seed * 100003 + epoch)
        self.loader.batch_sampler.set_epoch(self.seed * 100003 + epoch)
        if hasattr(self.loader.dataset, 'set_epoch'):
            self.loader.dataset.set_epoch(epoch)
        return self.loader

    # -- training -----------------------------------------------------------
    def resume(self, prefix):
        self.state.update(load_checkpoint(prefix, self.detector,
                                          self.optimizer))
        logger.info('Resumed from {}: epoch {}, step {}'.format(
            prefix, self.state['epoch'], self.state['step']))

    def train(self, validate=False):
        cfg = self.cfg
        model = self.model
        if self.nranks > 1:  # python -m paddle.distributed.launch ...
            dist.init_parallel_env()
            model = paddle.DataParallel(model)
        scaler = paddle.amp.GradScaler(
            init_loss_scaling=cfg.get('init_loss_scaling', 1024)) \
            if cfg.get('amp', False) and self.use_gpu else None
        epochs = int(cfg['epoch'])
        self.total_steps = epochs * self.steps_per_epoch
        batch_size = self.loader.batch_size
        self._call('on_train_begin')
        for epoch in range(self.state['epoch'], epochs):
            self.state['epoch'] = epoch
            self.model.train()
            tic = time.time()
            for i, data in enumerate(self._epoch_batches(epoch)):
                data_time = time.time() - tic
                outputs = self._forward(model, data, scaler)
                loss = outputs['loss']
                self._check_finite(outputs)
                if scaler is not None:
                    scaled = scaler.scale(loss)
                    scaled.backward()
                    scaler.minimize(self.optimizer, scaled)
                else:
                    loss.backward()
                    self.optimizer.step()
                lr = self.optimizer.get_lr()
                self.optimizer.clear_grad()
                self.lr.step()
                self.state['step'] += 1
                batch_time = time.time() - tic
                self._call('on_step_end', {
                    'epoch': epoch, 'iter': i, 'lr': lr, 'outputs': outputs,
                    'batch_time': batch_time, 'data_time': data_time,
                    'ips': batch_size / max(batch_time, 1e-9)})
                tic = time.time()
            last = epoch + 1 == epochs
            snapshot = (epoch + 1) % int(cfg.get('snapshot_epoch', 1)) == 0
            results = None
            if validate and (snapshot or last) and self.rank == 0:
                results = self.evaluate()
                current = results['mAP'][cfg.get('map_type', '11point')
                                         .replace('integral', 'area')]
                if self.state['best_map'] is None or \
                        current > self.state['best_map']:
                    self.state['best_map'] = current
                    self.state['best_step'] = self.state['step']
                    results['is_best'] = True
            self.state['epoch'] = epoch + 1
            self._call('on_epoch_end', {'epoch': epoch, 'eval': results,
                                        'snapshot': snapshot or last,
                                        'last': last})
        self._call('on_train_end')
        return self.state

    def _forward(self, model, data, scaler):
        try:
            with paddle.amp.auto_cast(enable=scaler is not None,
                                      level=self.cfg.get('amp_level', 'O1')):
                return model(data)
        except (ValueError, RuntimeError) as e:
            # ppdet's YOLO loss asserts on NaN inputs: the weights diverged.
            if 'nan' not in str(e).lower():
                raise
            raise NonFiniteLossError(
                'NaN in the forward at step {} (epoch {}): the previous update '
                'diverged. The last checkpoint in {} is intact. Lower the '
                'learning rate or the distillation weight.'.format(
                    self.state['step'] + 1, self.state['epoch'],
                    self.output_dir)) from None

    def _check_finite(self, outputs):
        bad = {k: float(v) for k, v in outputs.items()
               if isinstance(v, paddle.Tensor) and v.size == 1 and
               not math.isfinite(float(v))}
        if bad:
            raise NonFiniteLossError(
                'non-finite loss at step {} (epoch {}): {}. Nothing was saved '
                'for this step; the last checkpoint in {} is intact. Lower the '
                'learning rate or the distillation weight.'.format(
                    self.state['step'] + 1, self.state['epoch'],
                    ', '.join('{}={}'.format(k, v) for k, v in bad.items()),
                    self.output_dir))

    def _call(self, hook, status=None):
        for c in self.callbacks:
            getattr(c, hook)(self, status or {})

    # -- evaluation ---------------------------------------------------------
    def evaluate(self):
        loader = self.eval_loader
        evaluator = VOCEvaluator(self.class_names)
        was_training = self.detector.training
        self.detector.eval()
        tic = time.time()
        with paddle.no_grad():
            for data in loader:
                evaluator.update(data, self.detector(data))
        cost = time.time() - tic
        if was_training:
            self.detector.train()
        res = evaluator.accumulate()
        res['images_per_sec'] = res['num_images'] / max(cost, 1e-9)
        res['step'] = self.state['step']
        logger.info('Total number of images: {}, inference time: {:.2f} '
                    'fps.'.format(res['num_images'], res['images_per_sec']))
        for name in ('11point', 'area'):
            logger.info('mAP(0.50, {}) = {:.2f}%'.format(
                name, 100 * res['mAP'][name]))
        self._call('on_eval_end', res)
        return res


def _read_labels(dataset):
    path = os.path.join(dataset.dataset_dir, dataset.label_list)
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]
