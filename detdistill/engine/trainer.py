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
import time

import paddle
import paddle.distributed as dist
from ppdet.core.workspace import create

from ..config import activate, build_model
from ..data.build import build_eval_loader, build_train_loader
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..fileio import read_label_list
from ..logger import get_logger
from ..seeding import epoch_seed, run_seed, seed_everything
from . import interrupt
from .callbacks import LogOnly
from .checkpoint import (load_checkpoint, optimizer_state,
                         restore_optimizer, strip_ext)
from .evaluator import build_evaluator

__all__ = ['Trainer', 'NonFiniteLossError', 'set_device', 'build_detector']

logger = get_logger()


def set_device(cfg):
    """The config's device (`use_gpu`), set once by each tool."""
    use_gpu = cfg.get('use_gpu', False) and paddle.is_compiled_with_cuda()
    if cfg.get('use_gpu', False) and not use_gpu:
        logger.info('use_gpu is set but Paddle has no CUDA here: running on CPU')
    paddle.set_device('gpu' if use_gpu else 'cpu')
    return use_gpu


def build_detector(cfg):
    """The config's architecture, initialised from its `seed`: the baseline
    (tools/train.py) and the distilled student (distill.py) start from the
    same weights for the same seed."""
    seed_everything(run_seed(cfg))
    return build_model(cfg)


class Trainer:
    """Train (`mode='train'`) or evaluate `detector`, by default the
    config's architecture. In training, `model(batch)` supplies the loss dict
    (default: the detector; distill.py passes its Distiller) and `loader`
    the batches (default: the config's TrainReader); the detector is what is
    optimised, evaluated and saved.
    """

    def __init__(self, cfg, mode='train', model=None, detector=None,
                 loader=None):
        self.cfg = cfg
        self.mode = mode
        self.use_gpu = 'gpu' in str(paddle.get_device())
        self.seed = run_seed(cfg)
        self.output_dir = os.path.join(cfg.get('save_dir', 'output'),
                                       cfg['filename'])
        self.nranks, self.rank = dist.get_world_size(), dist.get_rank()
        self.model = model if model is not None else build_detector(cfg)
        self.detector = detector if detector is not None else self.model
        if mode == 'train':
            self.loader = loader if loader is not None else \
                build_train_loader(cfg)
            self.steps_per_epoch = len(self.loader)
            with activate(cfg):
                self.lr = create('LearningRate')(self.steps_per_epoch)
                self.optimizer = create('OptimizerBuilder')(self.lr,
                                                            self.detector)
            self._setup_training_extras()
        self._eval_loader = None
        self.callbacks = []
        self.state = {'epoch': 0, 'step': 0, 'best_map': None,
                      'best_step': None}

    # -- data ---------------------------------------------------------------
    @property
    def eval_loader(self):
        if self._eval_loader is None:
            self._eval_loader, labels = build_eval_loader(self.cfg)
            self.class_names = read_label_list(labels)
        return self._eval_loader

    def _epoch_batches(self, epoch):
        # Data order and augmentation are a function of (seed, epoch) only, so
        # a resumed run sees exactly the batches an uninterrupted one would.
        seed_everything(epoch_seed(self.seed, epoch))
        self.loader.start_epoch(epoch)
        return self.loader

    # -- training -----------------------------------------------------------
    def _setup_training_extras(self):
        """EMA of the weights (`use_ema`) and AMP loss scaling (`amp`),
        built once, before a resume restores their state."""
        cfg = self.cfg
        self.ema = None
        if cfg.get('use_ema', False):
            from ppdet.optimizer.ema import ModelEMA
            self.ema = ModelEMA(self.detector,
                                decay=float(cfg.get('ema_decay', 0.9998)),
                                ema_decay_type=cfg.get('ema_decay_type',
                                                       'threshold'))
        self.scaler = None
        if cfg.get('amp', False):
            level = cfg.get('amp_level', 'O1')
            if level not in ('O1', 'O2'):
                raise ConfigError("amp_level must be 'O1' or 'O2', got "
                                  "{!r}".format(level))
            if self.use_gpu and level == 'O2':
                # O2 keeps float16 weights with float32 master copies in the
                # optimizer: the model and the optimizer must be decorated.
                paddle.amp.decorate(models=self.detector,
                                    optimizers=self.optimizer, level='O2',
                                    master_weight=True)
            # Paddle disables the scaler (with a warning) and ignores
            # auto_cast on CPU: amp is a GPU feature.
            self.scaler = paddle.amp.GradScaler(
                enable=self.use_gpu,
                init_loss_scaling=float(cfg.get('init_loss_scaling', 1024)))

    def checkpoint(self):
        """(weights, training state) for save_checkpoint: with EMA the
        averaged weights are what evaluates and exports, and the raw weights
        travel in the training state."""
        training = {'optimizer': optimizer_state(self.optimizer,
                                                 self.detector),
                    'state': dict(self.state)}
        weights = self.detector.state_dict()
        if self.ema is not None:
            training['model'] = weights
            training['ema'] = {'state_dict': self.ema.state_dict,
                               'step': self.ema.step,
                               'epoch': self.ema.epoch,
                               'decay': getattr(self.ema, '_decay', None)}
            weights = self.ema_weights()
        if self.scaler is not None:
            training['scaler'] = self.scaler.state_dict()
        return weights, training

    def ema_weights(self):
        """The EMA weights, without advancing ppdet's apply() counter."""
        epoch = self.ema.epoch
        weights = self.ema.apply()
        self.ema.epoch = epoch
        return weights

    def resume(self, prefix):
        weights, training = load_checkpoint(prefix)
        if ('ema' in training) != (self.ema is not None):
            raise CheckpointError(
                '{} was saved {} EMA but this run has use_ema: {}; resume '
                'with the same setting'.format(
                    strip_ext(prefix), 'with' if 'ema' in training else
                    'without', self.ema is not None))
        _set_exactly(self.detector, training.get('model', weights), prefix)
        restore_optimizer(self.optimizer, self.detector,
                          training['optimizer'])
        if self.ema is not None:
            e = training['ema']
            self.ema.resume(e['state_dict'], e['step'])
            self.ema.epoch = e['epoch']
            if e['decay'] is not None:
                self.ema._decay = e['decay']
        saved_scaler = training.get('scaler') or {}
        if self.scaler is not None and self.scaler.is_enable():
            if saved_scaler:
                self.scaler.load_state_dict(saved_scaler)
            else:
                logger.info('{} holds no AMP loss scale: starting from '
                            'init_loss_scaling'.format(strip_ext(prefix)))
        elif saved_scaler:
            logger.warning('{} holds an AMP loss scale, but this run has no '
                           'active loss scaler (amp off, or a CPU, where '
                           'Paddle disables it): it is not used'.format(
                               strip_ext(prefix)))
        self.state.update(training['state'])
        logger.info('Resumed from {}: epoch {}, step {}'.format(
            prefix, self.state['epoch'], self.state['step']))

    def train(self, validate=False):
        cfg = self.cfg
        model = self.model
        if self.nranks > 1:  # python -m paddle.distributed.launch ...
            dist.init_parallel_env()
            model = paddle.DataParallel(model, find_unused_parameters=bool(
                cfg.get('find_unused_parameters', False)))
        epochs = int(cfg['epoch'])
        self.total_steps = epochs * self.steps_per_epoch
        batch_size = self.loader.batch_size
        self._call('on_train_begin')
        for epoch in range(self.state['epoch'], epochs):
            self.state['epoch'] = epoch
            self.model.train()
            tic = time.time()
            for i, data in enumerate(self._epoch_batches(epoch)):
                interrupt.check()
                data_time = time.time() - tic
                outputs = self._forward(model, data)
                loss = outputs['loss']
                outputs = _resolve_log_only(
                    outputs, self.is_log_step(self.state['step'] + 1))
                self._check_finite(outputs)
                if self.scaler is not None:
                    # A step whose gradients overflow is skipped by the
                    # scaler (which lowers the scale): normal under AMP.
                    scaled = self.scaler.scale(loss)
                    scaled.backward()
                    self.scaler.minimize(self.optimizer, scaled)
                else:
                    loss.backward()
                    self.optimizer.step()
                lr = self.optimizer.get_lr()
                self.optimizer.clear_grad()
                self.lr.step()
                if self.ema is not None:
                    self.ema.update()
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

    def _forward(self, model, data):
        try:
            with paddle.amp.auto_cast(
                    enable=self.scaler is not None and self.use_gpu,
                    level=self.cfg.get('amp_level', 'O1')):
                return model(data)
        except (ValueError, RuntimeError) as e:
            # Non-finite weights make ppdet's loss kernels raise (e.g. the
            # BCE kernel's "input must be >= 0 ... received -nan"): report
            # that as divergence. Any other error goes up unchanged.
            bad = _first_non_finite(self.detector)
            if bad is None:
                raise
            raise NonFiniteLossError(
                'the weights are not finite at step {} (epoch {}; first: '
                '{}): the previous update diverged. Nothing was saved from '
                'it; the last checkpoint in {} is intact. Lower the learning '
                'rate or the distillation weight.'.format(
                    self.state['step'] + 1, self.state['epoch'], bad,
                    self.output_dir)) from e

    def _check_finite(self, outputs):
        """The optimised total `loss` must be finite (log-only outputs such
        as `teacher_loss` may not be: they do not train anything). The
        message names every non-finite term, to show where it started."""
        if math.isfinite(float(outputs['loss'])):
            return
        bad = {k: float(v) for k, v in outputs.items()
               if isinstance(v, paddle.Tensor) and v.size == 1 and
               not math.isfinite(float(v))}
        raise NonFiniteLossError(
            'non-finite loss at step {} (epoch {}): {}. Nothing was saved '
            'for this step; the last checkpoint in {} is intact. Lower the '
            'learning rate or the distillation weight.'.format(
                self.state['step'] + 1, self.state['epoch'],
                ', '.join('{}={}'.format(k, v) for k, v in bad.items()),
                self.output_dir))

    def is_log_step(self, step):
        """Steps that get a log line: every `log_iter`-th and the last."""
        return step % int(self.cfg.get('log_iter', 20)) == 0 or \
            step == self.total_steps

    def _call(self, hook, status=None):
        for c in self.callbacks:
            getattr(c, hook)(self, status or {})

    # -- evaluation ---------------------------------------------------------
    def evaluate(self):
        loader = self.eval_loader
        evaluator = build_evaluator(self.cfg, self.class_names)
        was_training = self.detector.training
        raw = None
        if getattr(self, 'ema', None) is not None:  # evaluate what is saved
            raw = {k: v.clone() for k, v in self.detector.state_dict().items()}
            self.detector.set_state_dict(self.ema_weights())
        self.detector.eval()
        tic = time.time()
        try:
            with paddle.no_grad():
                for data in loader:
                    interrupt.check()
                    evaluator.update(data, self.detector(data))
        finally:
            if raw is not None:
                self.detector.set_state_dict(raw)
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


def _resolve_log_only(outputs, logged):
    """Evaluate LogOnly outputs on a logged step, drop them on the others."""
    out = {}
    for k, v in outputs.items():
        if isinstance(v, LogOnly):
            v = v() if logged else None
            if v is None:
                continue
        out[k] = v
    return out


def _first_non_finite(model):
    for name, p in model.state_dict().items():
        if not bool(paddle.isfinite(p).all()):
            return name
    return None


def _set_exactly(model, weights, prefix):
    """Resume needs every weight: names and shapes must equal the model's."""
    own = model.state_dict()
    bad = sorted(set(own) ^ set(weights)) + sorted(
        k for k in set(own) & set(weights)
        if list(own[k].shape) != list(weights[k].shape))
    if bad:
        raise CheckpointError('{}.pdparams does not match the model: {} '
                              'keys differ, e.g. {}'.format(
                                  strip_ext(prefix), len(bad),
                                  ', '.join(bad[:5])))
    model.set_state_dict(weights)
