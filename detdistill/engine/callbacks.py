"""Training callbacks: each adds one behaviour to the loop (PaddleDetection's
pattern). Hooks: on_train_begin, on_step_end, on_epoch_end, on_eval_end,
on_train_end; each receives the trainer and a status dict."""
import collections
import datetime
import json
import os

import paddle

from ..logger import get_logger
from .checkpoint import save_checkpoint

__all__ = ['Callback', 'LogOnly', 'EpochNote', 'LogPrinter', 'Checkpointer',
           'VisualDLWriter', 'HistoryWriter', 'default_callbacks']

logger = get_logger()


class LogOnly:
    """A model output that trains nothing and costs compute (the teacher's
    detection loss): the trainer evaluates it on the steps that are logged
    and drops it on the others."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        return self.fn()


def _scalars(outputs):
    """Scalar tensors of a model's output dict, as floats."""
    return {k: float(v) for k, v in outputs.items()
            if isinstance(v, paddle.Tensor) and v.size == 1}


class Callback:
    def on_train_begin(self, trainer, status):
        pass

    def on_step_end(self, trainer, status):
        pass

    def on_epoch_end(self, trainer, status):
        pass

    def on_eval_end(self, trainer, status):
        pass

    def on_train_end(self, trainer, status):
        pass


class EpochNote(Callback):
    """One log line at each epoch's end from `note()` (e.g. the teacher
    cache's size and hit rate), when it has one."""

    def __init__(self, note):
        self.note = note

    def on_epoch_end(self, trainer, status):
        line = self.note()
        if line:
            logger.info(line)


TIMING = ('batch_time', 'data_time', 'ips')


class LogPrinter(Callback):
    """PaddleDetection-shaped progress lines every `log_iter` steps: every
    loss component, throughput and ETA averaged over the steps since the
    previous line; log-only outputs (`teacher_loss`) are those of the logged
    step's batch, the only step they are computed on."""

    def __init__(self):
        self.window = collections.defaultdict(list)

    def on_step_end(self, trainer, status):
        for k, v in _scalars(status['outputs']).items():
            self.window[k].append(v)
        for k in TIMING:
            self.window[k].append(status[k])
        step = trainer.state['step']
        if not trainer.is_log_step(step):
            return
        avg = {k: sum(v) / len(v) for k, v in self.window.items() if v}
        self.window.clear()
        eta = datetime.timedelta(seconds=int(
            avg['batch_time'] * (trainer.total_steps - step)))
        keys = sorted((k for k in avg if k not in TIMING),
                      key=lambda k: k != 'loss')  # total loss first
        losses = ' '.join('{}: {:.6f}'.format(k, avg[k]) for k in keys)
        logger.info(
            'Epoch: [{}] [{:>4}/{}] step: {} eta: {} lr: {:.6f} {} '
            'batch_cost: {:.4f} data_cost: {:.4f} ips: {:.2f} images/s'.format(
                status['epoch'], status['iter'] + 1, trainer.steps_per_epoch,
                step, eta, status['lr'], losses, avg['batch_time'],
                avg['data_time'], avg['ips']))
        trainer.last_log = dict(avg, step=step, lr=status['lr'],
                                total_steps=trainer.total_steps)


class Checkpointer(Callback):
    """`<epoch>` at every snapshot, `best_model` when eval improves,
    `model_final` at the end; every write is atomic (see checkpoint.py)."""

    def on_epoch_end(self, trainer, status):
        if trainer.rank != 0:
            return
        if status['eval'] and status['eval'].get('is_best'):
            self._save(trainer, 'best_model')
            logger.info('Best test box ap: {:.2f}, in step: {}'.format(
                100 * trainer.state['best_map'], trainer.state['best_step']))
        if status['snapshot']:
            self._save(trainer, str(status['epoch']))

    def on_train_end(self, trainer, status):
        if trainer.rank == 0:
            self._save(trainer, 'model_final')
            if trainer.state['best_map'] is not None:
                logger.info('Best test box ap: {:.2f}, in step: {}'.format(
                    100 * trainer.state['best_map'],
                    trainer.state['best_step']))

    def _save(self, trainer, name):
        prefix = os.path.join(trainer.output_dir, name)
        save_checkpoint(prefix, *trainer.checkpoint())
        logger.info('Save model to {}.'.format(prefix))


class VisualDLWriter(Callback):
    """Scalars for `visualdl --logdir DIR`: every loss component, lr, ips and
    eval mAP, against the global step."""

    def __init__(self, logdir):
        from visualdl import LogWriter
        self.writer = LogWriter(logdir)

    def on_step_end(self, trainer, status):
        step = trainer.state['step']
        for k, v in _scalars(status['outputs']).items():
            self.writer.add_scalar('train/' + k, v, step)
        self.writer.add_scalar('train/lr', status['lr'], step)
        self.writer.add_scalar('train/ips', status['ips'], step)

    def on_eval_end(self, trainer, status):
        for name, v in status['mAP'].items():
            self.writer.add_scalar('eval/mAP_' + name, 100 * v, status['step'])

    def on_train_end(self, trainer, status):
        self.writer.close()


class HistoryWriter(Callback):
    """`history.jsonl` (one record per logged window and per eval) and
    `curves.png` (losses and mAP over steps) in the output directory. On resume
    records past the checkpoint's step are dropped, so the history is that of
    the run the weights came from."""

    def on_train_begin(self, trainer, status):
        if trainer.rank != 0:
            return
        os.makedirs(trainer.output_dir, exist_ok=True)
        self.path = os.path.join(trainer.output_dir, 'history.jsonl')
        step = trainer.state['step']
        kept = [r for r in read_history(self.path) if r['step'] <= step] \
            if step else []
        with open(self.path, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)

    def _append(self, record):
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    def on_step_end(self, trainer, status):
        log = getattr(trainer, 'last_log', None)
        if trainer.rank == 0 and log and log['step'] == trainer.state['step']:
            self._append(dict(log, kind='train', epoch=status['epoch']))

    def on_eval_end(self, trainer, status):
        if trainer.rank == 0:
            self._append({'kind': 'eval', 'step': status['step'],
                          'mAP': status['mAP'],
                          'images_per_sec': status['images_per_sec']})
            self.plot(trainer)

    def on_train_end(self, trainer, status):
        if trainer.rank == 0:
            self.plot(trainer)

    def plot(self, trainer):
        from ..plots import plot_history
        plot_history(read_history(self.path),
                     os.path.join(trainer.output_dir, 'curves.png'),
                     title=trainer.cfg['filename'])


def read_history(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def default_callbacks(cfg, use_vdl=False, vdl_log_dir=None):
    cbs = [LogPrinter(), Checkpointer(), HistoryWriter()]
    # Under paddle.distributed.launch every rank runs the callbacks: one
    # writer per log directory.
    if (use_vdl or cfg.get('use_vdl', False)) and \
            paddle.distributed.get_rank() == 0:
        cbs.append(VisualDLWriter(vdl_log_dir or cfg.get('vdl_log_dir') or
                                  'vdl_log_dir/scalar'))
    return cbs
