"""What one step costs: the one step timer every measurement in bench/ uses
(`time_steps`), the benchmark's step cost (`distill_step_cost`), and the
seam to the library's distiller and trainer (`Distillation`,
`student_trainer`, `eval_trainer`, `logged_scalars`)."""
import os
import time

import numpy as np

__all__ = ['warm_up', 'time_steps', 'train_step', 'distill_step_cost',
           'method_step_costs', 'write_method_step_costs',
           'Distillation', 'student_trainer', 'eval_trainer',
           'logged_scalars']


def warm_up(fns, batches):
    """One call of every fn on every batch: what is not per-step cost
    (compiling, filling caches, first-call allocations) happens here."""
    for b in batches:
        for f in fns.values():
            f(b)


def time_steps(fns, batches, repeats, warmup=True):
    """{name: {'wall_s', 'cpu_s', 'repeats'}}: medians over `repeats` rounds
    of one call of every fn, after `warm_up` (unless done already). Round r
    calls each fn on batches[r % n], in an order rotated by one each round
    so that no fn always runs first (load changes hit every fn alike). CPU
    seconds count every thread of the process: on a shared machine they are
    the steadier figure."""
    if warmup:
        warm_up(fns, batches)
    names = list(fns)
    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    for r in range(repeats):
        batch = batches[r % len(batches)]
        for k in names[r % len(names):] + names[:r % len(names)]:
            w, c = time.perf_counter(), time.process_time()
            fns[k](batch)
            cpu[k].append(time.process_time() - c)
            wall[k].append(time.perf_counter() - w)
    return {k: {'wall_s': float(np.median(wall[k])),
                'cpu_s': float(np.median(cpu[k])), 'repeats': repeats}
            for k in names}


def train_step(model, optimizer):
    """One training step of a model whose forward returns {'loss': ...}."""
    def step(batch):
        loss = model(batch)['loss']
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return step


def distill_step_cost(profile, teacher_weights, repeats=10, opts=()):
    """Seconds per step of the student train step, the teacher's inference
    forward, the distill step (the profile's step_method) and the
    distillation loss alone (forward + backward), interleaved in this
    process; and the ratios the targets judge."""
    import paddle
    from detdistill.config import build_model, load_config
    from detdistill.weights import load_weights
    from .runs import ROOT, overrides, profile_opts
    cfg = load_config(os.path.join(ROOT, profile.student), profile_opts(
        profile, opts) + overrides(profile.step_method, profile, opts))
    tcfg = load_config(os.path.join(ROOT, profile.teacher),
                       list(profile.opts))
    paddle.set_device('cpu')
    student, teacher = build_model(cfg), build_model(tcfg)
    load_weights(teacher, teacher_weights)
    d = Distillation(cfg, student, teacher)
    trainer = d.trainer(cfg)
    batch = next(iter(trainer.loader))
    fns = {'student_train_step': train_step(student, trainer.optimizer),
           # the forward itself: with the teacher cache on, the distiller's
           # teacher outputs would time a cache lookup after the first call
           'teacher_inference_forward': d.teacher_forward,
           'distill_step': train_step(d.model, trainer.optimizer),
           'distill_loss_only': d.loss_only(batch)}
    d.model.train()
    med = {k: v['wall_s'] for k, v in time_steps(fns, [batch],
                                                 repeats).items()}
    med['ratio_distill_vs_student_plus_teacher'] = med['distill_step'] / (
        med['student_train_step'] + med['teacher_inference_forward'])
    med['ratio_distill_vs_student'] = med['distill_step'] / \
        med['student_train_step']
    med['loss_share_of_distill_step'] = med['distill_loss_only'] / \
        med['distill_step']
    med['batch_size'] = trainer.loader.batch_size
    med['distill_method'] = profile.step_method
    med['teacher_cache'] = d.cache is not None
    return med


def method_step_costs(profile, teacher_weights, methods, repeats=10,
                      opts=()):
    """What each distill row's step costs against the plain student's:
    {'student_train_step': {...}, METHOD: {...}, ...} of median wall and
    CPU seconds, every step interleaved in this process (time_steps), so a
    loaded machine slows all of them alike; per method also
    `vs_student` (CPU seconds ratio) and `loss_share` (its distillation
    losses alone, forward + backward, as a share of its step). Each row gets
    its own student, distiller and optimizer, from the same initialisation
    and batch; the teacher's outputs are cached after the warm-up call, as
    from a training run's second epoch."""
    import paddle
    from detdistill.config import build_model, load_config
    from detdistill.weights import load_weights
    from .runs import ROOT, overrides, profile_opts
    paddle.set_device('cpu')
    tcfg = load_config(os.path.join(ROOT, profile.teacher),
                       list(profile.opts))
    fns, losses, batch = {}, {}, None
    for m in methods:
        cfg = load_config(os.path.join(ROOT, profile.student), profile_opts(
            profile, opts) + overrides(m, profile, opts))
        paddle.seed(0)
        student, teacher = build_model(cfg), build_model(tcfg)
        load_weights(teacher, teacher_weights)
        d = Distillation(cfg, student, teacher)
        trainer = d.trainer(cfg)
        if batch is None:
            batch = next(iter(trainer.loader))
            paddle.seed(0)
            plain = student_trainer(cfg)
            fns['student_train_step'] = train_step(plain.detector,
                                                   plain.optimizer)
        d.model.train()
        fns[m] = train_step(d.model, trainer.optimizer)
        losses[m] = d.loss_only(batch)
    timed = time_steps(fns, [batch], repeats)
    loss_timed = time_steps(losses, [batch], repeats)
    base = timed['student_train_step']['cpu_s']
    for m in methods:
        timed[m]['vs_student'] = timed[m]['cpu_s'] / base
        timed[m]['loss_share'] = loss_timed[m]['cpu_s'] / timed[m]['cpu_s']
    return timed


def write_method_step_costs(costs, path, cmd):
    """The figures of method_step_costs as a markdown table (and a .json
    beside it)."""
    from detdistill.fileio import atomic_write
    import json
    atomic_write(os.path.splitext(path)[0] + '.json',
                 json.dumps(costs, indent=1))
    lines = ['# Step cost of each distillation row', '',
             'Produced by `{}`: median seconds of one training step, every '
             'row interleaved in one process (CPU seconds are the steadier '
             'figure on a shared machine); "loss share" is the '
             'distillation losses alone (forward and backward) as a share '
             'of the row\'s step. The teacher\'s outputs come from its '
             'cache, as in every epoch after the first.'.format(cmd), '',
             '| row | step wall (s) | step CPU (s) | vs plain student (CPU) '
             '| loss share |', '|---|---|---|---|---|']
    for k, v in costs.items():
        lines.append('| {} | {:.4f} | {:.4f} | {} | {} |'.format(
            k, v['wall_s'], v['cpu_s'],
            '{:.2f}x'.format(v['vs_student']) if 'vs_student' in v
            else '1.00x',
            '{:.0%}'.format(v['loss_share']) if 'loss_share' in v else '-'))
    atomic_write(path, '\n'.join(lines) + '\n')


# -- The seam to the library's distiller and trainer --------------------------
# Every call bench/ makes into the distiller and the trainer is below (and
# uses of what they return: `.loader`, `.optimizer`, the distiller's
# forward): their API is being redesigned, and this is the place to adapt.
# Elsewhere bench/ reads the training log and checkpoints (runs.py:
# read_history, latest_checkpoint) and resolves a row's losses (report.py:
# distill_settings).

class Distillation:
    """A distiller of `student` by `teacher` (config `cfg`), seen through
    what the timers use."""

    def __init__(self, cfg, student, teacher):
        from detdistill.distill.distiller import build_distiller
        self.model = build_distiller(cfg, student, teacher)

    def trainer(self, cfg):
        """The library's trainer of this distiller (loader, optimizer)."""
        from detdistill.engine import Trainer
        return Trainer(cfg, 'train', model=self.model,
                       detector=self.model.student, extra=self.model.extra)

    @property
    def student(self):
        return self.model.student

    def teacher_forward(self, batch):
        """The teacher's forward to its paired outputs (compiled when the
        distiller compiled it), never the cache."""
        return self.model.teacher.forward(batch)

    def eager_teacher_forward(self, batch):
        return self.model.teacher.eager(batch)

    @property
    def teacher_layers(self):
        """The teacher outputs the distiller pairs, in pairing order."""
        return self.model.teacher.names

    def loss_only(self, batch):
        """A step of the distillation losses alone (forward + backward) on
        the teacher's outputs for `batch` and random student outputs of the
        student's shapes (a feature loss's connectors map them)."""
        import paddle
        t_out = self.model.teacher.outputs(batch)
        with paddle.no_grad():
            shapes = {k: v.shape for k, v in
                      self.model.student_outputs(batch).items()}
        s_out = {s: paddle.randn(shape) for s, shape in shapes.items()}
        for v in s_out.values():
            v.stop_gradient = False

        def step(batch):
            raw = self.model.raw_parts(s_out, t_out, batch)
            paddle.add_n([paddle.add_n(list(p.values()))
                          for p in raw]).backward()
        return step

    @property
    def cache(self):
        """The teacher cache (hits, misses, summary()), None when off."""
        return self.model.teacher.cache

    @property
    def compiled(self):
        """(active, why not) of the compiled teacher."""
        c = self.model.teacher.compiled
        if c is None:
            return False, 'Distill.teacher.compile is off'
        return c.active, c.failed or None

    @staticmethod
    def paired_teacher(teacher, layers):
        """`teacher` as a layer returning the outputs `layers`, in order:
        what paddle.jit.to_static converts. The library keeps it private
        (compiled_teacher._PairedForward); the peer comparison times it."""
        from detdistill.distill.compiled_teacher import _PairedForward
        return _PairedForward(teacher, layers)

    @staticmethod
    def max_relative_error(outputs, reference):
        from detdistill.distill.compiled_teacher import max_relative_error
        return max_relative_error(outputs, reference)


def student_trainer(cfg):
    """The library's trainer of the config's plain detector."""
    from detdistill.engine import Trainer
    return Trainer(cfg, 'train')


def eval_trainer(cfg):
    """The library's evaluator of a config: `.detector`, `.evaluate()`,
    `.eval_loader`."""
    from detdistill.engine import Trainer
    return Trainer(cfg, 'eval')


def logged_scalars(outputs):
    """{name: float} of a distiller forward's one-element outputs (values
    logged lazily resolved)."""
    import paddle
    from detdistill.engine.callbacks import LogOnly
    out = {k: v() if isinstance(v, LogOnly) else v for k, v in outputs.items()}
    return {k: float(v) for k, v in out.items()
            if isinstance(v, paddle.Tensor) and v.size == 1}
