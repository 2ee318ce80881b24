"""Which of Paddle's speed-ups pay off for a profile's student on this
machine: `paddle.jit.to_static`, AMP (bfloat16 is the only CPU AMP),
DataLoader workers, and several runs at once. `tools/dev/profile_step.py`
prints the figures and writes them to results/PROFILE.md; the trainer's
defaults follow what they show."""
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

from .runs import ROOT, profile_opts
from .step_cost import (Distillation, logged_scalars, student_trainer,
                        time_steps, train_step)

__all__ = ['step_variants', 'to_static_distiller_check',
           'loader_seconds_per_batch', 'eager_step_seconds', 'concurrent',
           'measure', 'write_profile']


def _student(profile, opts=(), worker_num=0):
    """(config, trainer) of the profile's student, on the CPU."""
    import paddle
    from detdistill.config import load_config
    paddle.set_device('cpu')
    cfg = load_config(os.path.join(ROOT, profile.student), profile_opts(
        profile, opts) + ['worker_num={}'.format(worker_num)])
    return cfg, student_trainer(cfg)


def _amp_step(model, opt, dtype):
    """train_step with the forward under AMP (the backward outside it)."""
    import paddle

    def step(batch):
        with paddle.amp.auto_cast(dtype=dtype, level='O1'):
            loss = model(batch)['loss']
        loss.backward()
        opt.step()
        opt.clear_grad()
    return step


def step_variants(profile, repeats=10, opts=()):
    """Median seconds of one student train step (batch of the config) in
    eager mode, under to_static and under bfloat16 AMP, interleaved so that
    load changes hit every variant alike. A variant that fails to run
    reports its error instead of a time."""
    import paddle
    from detdistill.config import build_model
    cfg, trainer = _student(profile, opts)
    batches = [b for _, b in zip(range(3), trainer.loader)]
    eager = trainer.model
    # to_static converts a layer in place: give it its own copy.
    static = build_model(cfg)
    static.set_state_dict(eager.state_dict())
    static_opt = paddle.optimizer.Adam(1e-4, parameters=static.parameters())
    variants, errors = {'eager': train_step(eager, trainer.optimizer)}, {}
    try:
        variants['to_static'] = train_step(
            paddle.jit.to_static(static, full_graph=True), static_opt)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        errors['to_static'] = repr(e)[:200]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        amp = _amp_step(eager, trainer.optimizer, 'bfloat16')
        amp(batches[0])
    ignored = [str(w.message) for w in caught if 'no effect' in
               str(w.message)]
    if ignored:  # Paddle runs fp32 and says so: nothing to time
        errors['amp_bf16'] = 'Paddle: ' + ignored[0]
    else:
        variants['amp_bf16'] = amp
    for m in (eager, static):
        m.train()
    for name, fn in list(variants.items()):  # warm-up (to_static compiles)
        try:
            for b in batches[:2]:
                fn(b)
        except Exception as e:  # noqa: BLE001
            errors[name] = repr(e)[:200]
            del variants[name]
    out = {k: v['wall_s'] for k, v in time_steps(
        variants, batches, repeats, warmup=False).items()}
    out.update({k + '_error': v for k, v in errors.items()})
    out['batch_size'] = trainer.loader.batch_size
    return out


def to_static_distiller_check(profile, opts=()):
    """Does `paddle.jit.to_static` keep the distiller's outputs? One batch
    through an (untrained) L2 distiller of the profile's models in eager and
    converted form; returns the output names whose values differ or that
    one side lacks."""
    import paddle
    from detdistill.config import build_model, load_config
    paddle.set_device('cpu')
    cfg = load_config(os.path.join(ROOT, profile.student),
                      profile_opts(profile, opts))
    teacher = build_model(load_config(os.path.join(ROOT, profile.teacher),
                                      list(profile.opts)))
    d = Distillation(cfg, build_model(cfg), teacher)
    batch = next(iter(d.trainer(cfg).loader))
    d.model.train()
    eager = logged_scalars(d.model(batch))
    try:
        static = logged_scalars(paddle.jit.to_static(
            d.model, full_graph=True)(batch))
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        return ['conversion failed: ' + repr(e)[:200]]
    return sorted(k for k in set(eager) | set(static)
                  if k not in eager or k not in static or
                  abs(eager[k] - static[k]) > 1e-3 * max(1., abs(eager[k])))


def loader_seconds_per_batch(profile, worker_num, batches=30, opts=()):
    """Seconds per batch of the train loader alone (decode, augment,
    targets), no model: what a worker process could take off the training
    loop."""
    _, trainer = _student(profile, opts, worker_num)
    it = iter(trainer.loader)
    next(it)  # start-up (worker spawn) is not per-batch cost
    tic = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        n += 1
    return (time.perf_counter() - tic) / max(n, 1)


def eager_step_seconds(profile_name, repeats=10, opts=()):
    """Median eager student step in this process (what `concurrent` runs
    in each of its processes)."""
    from .catalogue import catalogue
    _, trainer = _student(catalogue().profiles[profile_name], opts)
    batches = [b for _, b in zip(range(3), trainer.loader)]
    trainer.model.train()
    return time_steps({'eager': train_step(trainer.model, trainer.optimizer)},
                      batches, repeats)['eager']['wall_s']


def concurrent(profile, n, repeats=10, opts=()):
    """Median eager step time in each of `n` processes started together:
    equal to the one-process time means one run uses one core, so n runs fit
    on n cores at full speed."""
    code = ('import json; '
            'from bench.speedups import eager_step_seconds; '
            'print("STEP", json.dumps(eager_step_seconds({!r}, {}, {!r})))'
            .format(profile.name, repeats, list(opts)))
    procs = [subprocess.Popen([sys.executable, '-c', code], cwd=ROOT,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
             for _ in range(n)]
    out = []
    for p in procs:
        try:  # bounded: each process times `repeats` steps of a few seconds
            stdout, _ = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise RuntimeError('a profiling subprocess took over 900 s')
        if p.returncode != 0:
            raise RuntimeError('profiling subprocess failed (exit {})'.format(
                p.returncode))
        out.append(json.loads([line for line in stdout.splitlines()
                               if line.startswith('STEP ')][-1][5:]))
    return out


def measure(profile, repeats=10, jobs=2, opts=()):
    """Every measurement above, as one dict."""
    res = {'profile': profile.name, 'student': profile.student,
           'step': step_variants(profile, repeats, opts),
           'to_static_distiller_differs': to_static_distiller_check(
               profile, opts)}
    res['loader'] = {w: loader_seconds_per_batch(profile, w, opts=opts)
                     for w in (0, 1)}
    res['processes'] = {1: concurrent(profile, 1, repeats, opts)}
    if jobs > 1:
        res['processes'][jobs] = concurrent(profile, jobs, repeats, opts)
    return res


def write_profile(res, path, command_line):
    s = res['step']
    eager = s['eager']
    lines = ['# Profile of the CPU training step', '',
             'Produced by `{}` on this machine ({} CPU cores, no GPU): the {} '
             "profile's student ({}), batch {}, median seconds.".format(
                 command_line, os.cpu_count(), res['profile'],
                 res['student'], s['batch_size']),
             '', '| variant | step (s) | vs eager |', '|---|---|---|']
    for k in ('eager', 'to_static', 'amp_bf16'):
        if k in s:
            lines.append('| {} | {:.4f} | {:.2f}x |'.format(
                k, s[k], s[k] / eager))
        else:
            lines.append('| {} | not run: {} | - |'.format(
                k, s.get(k + '_error', '?')))
    ld = res['loader']
    lines += ['', 'Train loader alone (no model), seconds per batch: '
              'worker_num=0: {:.4f}, worker_num=1: {:.4f} (the eager step '
              'is {:.4f}).'.format(ld[0], ld[1], eager)]
    one = res['processes'][1][0]
    many = [v for k, v in res['processes'].items() if k != 1]
    lines += ['', 'Eager step with several training processes at once: '
              '1 process {:.4f} s; {}.'.format(one, '; '.join(
                  '{} processes {} s (mean {:.2f}x of one)'.format(
                      len(v), ', '.join('{:.4f}'.format(x) for x in v),
                      float(np.mean(v)) / one) for v in many))]
    lines += ['', '## What this means for the defaults', '']
    bad = res.get('to_static_distiller_differs')
    if 'to_static' in s and bad:
        lines.append('- `paddle.jit.to_static`: {:.2f}x the eager step of '
                     'the plain student, but the converted distiller returns '
                     'different outputs ({}: eager vs converted, one batch), '
                     'so the trainer stays eager.'.format(
                         s['to_static'] / eager, ', '.join(bad)))
    for k, what in (('to_static', '`paddle.jit.to_static`'),
                    ('amp_bf16', 'bfloat16 AMP on CPU')):
        if k == 'to_static' and bad:
            continue
        if k in s:
            lines.append('- {}: {:.2f}x the eager step, so {}.'.format(
                what, s[k] / eager, 'worth enabling' if s[k] < 0.9 * eager
                else 'under the 10 % gain that would pay for a second '
                'execution path: the trainer stays eager'))
        else:
            lines.append('- {}: not available here ({}), so the trainer '
                         'stays eager.'.format(what, s.get(k + '_error')))
    lines.append('- DataLoader workers: loading a batch takes {:.0%} of an '
                 'eager step and Paddle already overlaps it in a reader '
                 'thread, so `worker_num: 0` stays (a worker would compete '
                 'for a core).'.format(ld[0] / eager) if ld[0] < 0.5 * eager
                 else '- DataLoader workers: loading a batch takes {:.0%} of '
                 'an eager step: set `worker_num` > 0.'.format(ld[0] / eager))
    ratio = float(np.mean(many[-1])) / one if many else None
    if ratio is not None:
        lines.append('- {} runs at once each step at {:.2f}x the speed of one '
                     'alone: a training run uses one core here, so '
                     '`tools/benchmark.py --jobs` defaults to one run per '
                     'core.'.format(len(many[-1]), 1 / ratio))
    lines.append('- AMP with float16 is for GPU users (`amp: true` in a '
                 'config; it is ignored on CPU).')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return '\n'.join(lines)
