"""Side by side with PaddleDetection's own distillation, in one process.

`compare_steps` times, round-robin on the same batches with one CPU thread:
ppdet 2.6's `DistillModel` train step (student + teacher configs, the
fine-grained `DistillYOLOv3Loss`, built as ppdet's `build_slim_model` builds
it), our fine-grained distill step with the teacher cache off, with the cache
warm (every image a hit: what epochs 2+ cost when the reader is
deterministic) and with the compiled teacher, the student train step alone
and the teacher forwards alone. `compare_eval` times our evaluation against
ppdet's own `Trainer.evaluate` on the same config and weights.
`tools/dev/profile_step.py --compare_ppdet` runs both and writes
results/TEACHER_SPEED.md.

ppdet's DistillModel is stepped as ppdet's Trainer runs it: `model.train()`
puts its teacher in training mode too, and it must be, since
`DistillYOLOv3Loss` reads the teacher's head outputs from a list that only
the teacher's training-mode loss fills.
"""
import os
import platform
import tempfile

from .catalogue import catalogue
from .runs import ROOT, profile_opts
from .step_cost import (Distillation, eval_trainer, time_steps,
                        train_step, warm_up)

__all__ = ['compare_steps', 'compare_eval', 'compare', 'write_report']

# Row order of the step table; the first is the reference.
STEP_ROWS = [
    ('ppdet_distill_step', 'ppdet `DistillModel` + `DistillYOLOv3Loss` '
     'train step'),
    ('ours_distill_step', 'ours, eager teacher, cache off'),
    ('ours_distill_step_compiled', 'ours, compiled teacher (default), cache '
     'off'),
    ('ours_distill_step_cached', 'ours, teacher cache warm (epochs 2+ on a '
     'deterministic reader)'),
    ('student_train_step', 'student train step alone'),
    ('teacher_forward', 'our teacher forward alone (eager, to the paired '
     'outputs)'),
    ('teacher_forward_compiled', 'our teacher forward alone (compiled: '
     'Paddle Inference + oneDNN)'),
    ('teacher_forward_to_static', 'our teacher forward alone '
     '(`paddle.jit.to_static`, not kept)'),
    ('ppdet_teacher_forward', "ppdet's teacher half alone (training-mode "
     'forward + YOLOv3 loss, no_grad)'),
]


def one_thread():
    """Paddle's CPU math on one thread (the issue's comparison setting)."""
    import paddle
    paddle.set_device('cpu')
    paddle.base.core.set_num_threads(1)


def _configs(profile, opts):
    from detdistill.config import load_config
    cfg = load_config(os.path.join(ROOT, profile.student),
                      profile_opts(profile, opts))
    tcfg = load_config(os.path.join(ROOT, profile.teacher), list(profile.opts))
    return cfg, tcfg


def build_ppdet_distill_model(cfg, teacher_config, weight=1000.):
    """ppdet 2.6's DistillModel for student config `cfg` (our dict) and the
    teacher config file, with the fine-grained DistillYOLOv3Loss: the slim
    config PaddleDetection's yolov3 distillation recipe uses (teacher config
    as _BASE_, `slim: Distill`, `distill_loss: DistillYOLOv3Loss`)."""
    from ppdet.slim.distill_model import DistillModel
    from detdistill.config import activate
    with tempfile.TemporaryDirectory() as d:
        slim = os.path.join(d, 'distill.yml')
        with open(slim, 'w') as f:
            f.write('_BASE_: [{!r}]\nslim: Distill\ndistill_loss: '
                    'DistillYOLOv3Loss\nDistillYOLOv3Loss:\n  weight: {}\n'
                    .format(os.path.abspath(teacher_config), weight))
        with activate(cfg) as g:
            return DistillModel(g, slim)


def _optimizer(cfg, model, steps_per_epoch):
    from ppdet.core.workspace import create
    from detdistill.config import activate
    with activate(cfg):
        return create('OptimizerBuilder')(
            create('LearningRate')(steps_per_epoch), model)


def _with_teacher(cfg, **settings):
    """`cfg` with these Distill.teacher settings."""
    block = dict(cfg.get('Distill') or {})
    block['teacher'] = dict(block.get('teacher') or {}, **settings)
    return dict(cfg, Distill=block)


def compare_steps(profile, repeats=10, num_batches=4, opts=(),
                  teacher_weights=None, seed=0):
    """Median seconds per call of every STEP_ROWS variant, in this process,
    one thread, interleaved on `num_batches` fixed batches; plus the output
    check of the compiled teacher."""
    import paddle
    from detdistill.config import build_model
    from detdistill.weights import load_weights
    one_thread()
    cfg, tcfg = _configs(profile, list(opts) + [
        'use_fine_grained_loss=true', 'Distill.teacher.cache=false',
        'Distill.teacher.compile=false'])
    paddle.seed(seed)
    student0 = build_model(cfg)
    state = {k: v.clone() for k, v in student0.state_dict().items()}
    teacher = build_model(tcfg)
    if teacher_weights:
        load_weights(teacher, teacher_weights)
    t_state = teacher.state_dict()

    def student():
        s = build_model(cfg)
        s.set_state_dict(state)
        return s
    ours = Distillation(cfg, student0, teacher)
    trainer = ours.trainer(cfg)
    batches = [b for _, b in zip(range(num_batches), trainer.loader)]
    steps = trainer.steps_per_epoch
    cached = Distillation(_with_teacher(cfg, cache=True), student(), teacher)
    compiled = Distillation(_with_teacher(cfg, compile=True), student(),
                            teacher)
    alone = student()
    pp = build_ppdet_distill_model(cfg, os.path.join(ROOT, profile.teacher))
    pp.student_model.set_state_dict(state)
    pp.teacher_model.set_state_dict(t_state)

    def ppdet_teacher(batch):
        with paddle.no_grad():
            pp.teacher_model(batch)

    # to_static converts a layer in place: its own copy of the teacher.
    t_copy = build_model(tcfg)
    t_copy.set_state_dict(t_state)
    t_copy.eval()
    static = paddle.jit.to_static(
        Distillation.paired_teacher(t_copy, ours.teacher_layers),
        full_graph=True,
        input_spec=[paddle.static.InputSpec([None, 3, None, None],
                                            'float32', 'image')])

    def to_static_teacher(batch):
        with paddle.no_grad():
            static(batch['image'])

    fns = {
        'ppdet_distill_step': train_step(pp, _optimizer(cfg, pp, steps)),
        'ours_distill_step': train_step(ours.model, trainer.optimizer),
        'ours_distill_step_compiled': train_step(
            compiled.model, _optimizer(cfg, compiled.student, steps)),
        'ours_distill_step_cached': train_step(
            cached.model, _optimizer(cfg, cached.student, steps)),
        'student_train_step': train_step(
            alone, _optimizer(cfg, alone, steps)),
        'teacher_forward': ours.teacher_forward,
        'teacher_forward_compiled': compiled.teacher_forward,
        'teacher_forward_to_static': to_static_teacher,
        'ppdet_teacher_forward': ppdet_teacher,
    }
    for m in (pp, ours.model, cached.model, compiled.model, alone):
        m.train()  # what the trainers do each epoch; ppdet's teacher too
    # Warm-up: one pass over every batch (fills the cache, compiles); then
    # the compiled teacher's outputs are checked before it is timed.
    warm_up(fns, batches)
    compiled_ok, why_not = compiled.compiled
    eager_out = ours.eager_teacher_forward(batches[0])
    check = Distillation.max_relative_error(compiled.teacher_forward(
        batches[0]), eager_out) if compiled_ok else None
    static_check = Distillation.max_relative_error(dict(zip(
        ours.teacher_layers, static(batches[0]['image']))), eager_out)
    if not compiled_ok:
        for k in ('ours_distill_step_compiled', 'teacher_forward_compiled'):
            del fns[k]
    seen = cached.cache.hits, cached.cache.misses
    res = time_steps(fns, batches, repeats, warmup=False)
    out = {'steps': res, 'batch_size': trainer.loader.batch_size,
           'image_size': list(batches[0]['image'].shape[2:]),
           'num_batches': len(batches),
           'cache': cached.cache.summary(),
           'cache_timed': {'hits': cached.cache.hits - seen[0],
                           'misses': cached.cache.misses - seen[1]},
           'compiled_teacher': {'active': compiled_ok,
                                'max_relative_error': check,
                                'why_not': why_not},
           'to_static_max_relative_error': static_check}
    out['ratios'] = _ratios(res)
    return out


def _ratios(res):
    out = {}
    for basis in ('wall_s', 'cpu_s'):
        def v(k):
            return res[k][basis] if k in res else None
        r = {}
        pp, st, te = (v('ppdet_distill_step'), v('student_train_step'),
                      v('teacher_forward'))
        for k in ('ours_distill_step', 'ours_distill_step_cached',
                  'ours_distill_step_compiled'):
            if v(k) is not None:
                r[k + '/ppdet'] = v(k) / pp
                r[k + '/student'] = v(k) / st
        r['ours_distill_step/(student+teacher)'] = \
            v('ours_distill_step') / (st + te)
        r['teacher_share_of_ours'] = te / v('ours_distill_step')
        r['ppdet_teacher_share_of_ppdet'] = v('ppdet_teacher_forward') / pp
        if v('teacher_forward_compiled') is not None:
            r['teacher_compiled/eager'] = v('teacher_forward_compiled') / te
        r['teacher_to_static/eager'] = v('teacher_forward_to_static') / te
        out[basis] = r
    return out


def compare_eval(profile, repeats=3, opts=(), weights=None):
    """Images/s of our evaluation (Trainer.evaluate: loader, forward, NMS,
    11-point and area mAP) and of ppdet's `Trainer.evaluate` (loader,
    forward, NMS, VOCMetric) on the same config and weights, interleaved,
    one thread; with the mAP each reports."""
    import paddle
    from ppdet.engine import Trainer as PPTrainer
    from detdistill.config import activate
    from detdistill.weights import load_weights
    one_thread()
    cfg, _ = _configs(profile, opts)
    ours = eval_trainer(cfg)
    if weights:
        load_weights(ours.detector, weights)
    with activate(cfg) as g:
        pp = PPTrainer(g, mode='eval')
    pp.model.set_state_dict(ours.detector.state_dict())
    metric = pp._metrics[0]
    pp_maps = []
    reset = metric.reset

    def keep_then_reset():  # ppdet resets its metric at the end of evaluate
        pp_maps.append(metric.get_results()['bbox'][0])
        reset()
    metric.reset = keep_then_reset
    our_maps = []

    def ours_eval(_):
        our_maps.append(ours.evaluate()['mAP'])

    def ppdet_eval(_):
        with activate(cfg):
            pp.evaluate()
    fns = {'ours_evaluate': ours_eval, 'ppdet_evaluate': ppdet_eval}
    with paddle.no_grad():  # warm-up: loaders, first-call allocations
        res = time_steps(fns, [None], repeats)
    n = len(ours.eval_loader.dataset)
    for k in res:
        res[k]['images_per_s'] = n / res[k]['wall_s']
        res[k]['images_per_cpu_s'] = n / res[k]['cpu_s']
    return {'evaluate': res, 'num_images': n,
            'ours_mAP': our_maps[-1], 'ppdet_mAP_11point': float(pp_maps[-1]),
            'map_type': cfg.get('map_type')}


def compare(profiles=('demo',), repeats=10, eval_repeats=3, num_batches=4,
            teacher_weights=None, student_weights=None):
    """Both comparisons for each catalogue profile named. `teacher_weights`
    / `student_weights`: {profile: path} (random initialisation
    otherwise)."""
    import paddle
    import ppdet
    out = {'machine': machine(), 'paddle': paddle.__version__,
           'ppdet': getattr(ppdet, '__version__', '?'), 'profiles': {}}
    for p in profiles:
        prof = catalogue().profiles[p]
        out['profiles'][p] = {
            'steps': compare_steps(prof, repeats, num_batches,
                                   teacher_weights=(teacher_weights or {})
                                   .get(p)),
            'eval': compare_eval(prof, eval_repeats,
                                 weights=(student_weights or {}).get(p)),
            'teacher_weights': (teacher_weights or {}).get(p),
            'student_weights': (student_weights or {}).get(p)}
    out['machine']['loadavg_end'] = list(os.getloadavg())
    return out


def machine():
    """CPU, cores, load and what it offers a bfloat16 teacher: the CPU's
    bf16/AMX flags and Paddle's own answers."""
    import paddle
    cpu = platform.processor() or '?'
    flags = set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return {'cpu': cpu, 'cores': os.cpu_count(),
            'bf16': sorted(f for f in flags if 'bf16' in f or 'amx' in f),
            'avx512': any(f.startswith('avx512') for f in flags),
            'paddle_bf16': {
                'amp.is_bfloat16_supported': bool(
                    paddle.amp.is_bfloat16_supported()),
                'core.supports_bfloat16': bool(
                    paddle.base.core.supports_bfloat16()),
                'core.supports_bfloat16_fast_performance': bool(
                    paddle.base.core.supports_bfloat16_fast_performance())},
            'loadavg_start': list(os.getloadavg())}


def write_report(res, path, command_line):
    """Markdown tables of `compare`'s result."""
    from detdistill.fileio import atomic_write
    m = res['machine']
    lines = ["# Teacher speed: our distillation step vs PaddleDetection's", '',
             'Produced by `{}`: paddle {}, ppdet {}, {} ({} cores), one '
             'Paddle thread, median of interleaved repeats. Load average '
             '{} at the start and {} at the end: the machine was shared, so '
             'absolute seconds are not comparable with other runs; ratios '
             'measured interleaved in one process are what matter. Under '
             'such load a call\'s wall time includes waiting for a core, so '
             'the ratios of CPU seconds (process time, every thread of the '
             'process counted) are the primary figures; wall-clock ratios '
             'are given beside them.'.format(
                 command_line, res['paddle'], res['ppdet'], m['cpu'],
                 m['cores'], ', '.join('{:.1f}'.format(x)
                                       for x in m['loadavg_start']),
                 ', '.join('{:.1f}'.format(x) for x in m['loadavg_end'])),
             '', 'bfloat16 teacher: {}.'.format(
                 'possible here ({})'.format(', '.join(m['bf16']))
                 if m['bf16'] and all(m['paddle_bf16'].values()) else
                 'not available on this CPU: its flags have no avx512_bf16 '
                 'or amx_bf16 (AVX-512 at all: {}), and Paddle says {}'.format(
                     'yes' if m['avx512'] else 'no', ', '.join(
                         '{}() = {}'.format(k, v)
                         for k, v in m['paddle_bf16'].items())))]
    for p, r in res['profiles'].items():
        s = r['steps']
        pp = s['steps']['ppdet_distill_step']
        lines += ['', '## {} profile ({}, batch {}, {} px)'.format(
            p, catalogue().profiles[p].student, s['batch_size'],
            'x'.join(str(x) for x in s['image_size'])), '',
            'Teacher weights: {}. {} repeats over {} fixed batches.'.format(
                r['teacher_weights'] or 'random initialisation',
                pp['repeats'], s['num_batches']), '',
            'Our step / ppdet\'s (CPU seconds; wall clock in brackets): '
            'eager teacher {}, compiled teacher {}, cache warm {}.'.format(
                *['{:.2f}x ({:.2f}x)'.format(
                    s['steps'][k]['cpu_s'] / pp['cpu_s'],
                    s['steps'][k]['wall_s'] / pp['wall_s'])
                  if k in s['steps'] else '-' for k in (
                      'ours_distill_step', 'ours_distill_step_compiled',
                      'ours_distill_step_cached')]), '',
            '| step | wall (s) | vs ppdet | CPU (s) | vs ppdet (CPU) |',
            '|---|---|---|---|---|']
        for k, label in STEP_ROWS:
            if k not in s['steps']:
                continue
            v = s['steps'][k]
            lines.append('| {} | {:.4f} | {:.2f}x | {:.4f} | {:.2f}x |'.format(
                label, v['wall_s'], v['wall_s'] / pp['wall_s'], v['cpu_s'],
                v['cpu_s'] / pp['cpu_s']))
        rw, rc = s['ratios']['wall_s'], s['ratios']['cpu_s']
        lines += ['', '| ratio | wall | CPU |', '|---|---|---|']
        for k in rw:
            lines.append('| {} | {:.3f} | {:.3f} |'.format(k, rw[k], rc[k]))
        c = s['compiled_teacher']
        lines += ['', 'Compiled teacher: {}. `to_static` teacher: outputs '
                  'within {:.1e}.'.format(
                      'outputs within {:.1e} of the eager ones (relative to '
                      'their largest value)'.format(c['max_relative_error'])
                      if c['active'] else 'fell back to eager ({})'.format(
                          c['why_not']), s['to_static_max_relative_error']),
            'Teacher cache in the warm row: {} hits and {} misses in the '
            'timed steps ({} with the warm-up).'.format(
                s['cache_timed']['hits'], s['cache_timed']['misses'],
                s['cache'])]
        e = r['eval']
        lines += ['', 'Evaluation, {} test images, weights: {}:'.format(
            e['num_images'], r['student_weights'] or 'random initialisation'),
            '', '| evaluate | wall (s) | images/s | CPU (s) | images per CPU '
            's | mAP@0.5 11-point |', '|---|---|---|---|---|---|']
        for k, label, mp in (
                ('ours_evaluate', 'ours (`Trainer.evaluate`, 11-point and '
                 'area mAP)', e['ours_mAP']['11point']),
                ('ppdet_evaluate', "ppdet's `Trainer.evaluate` (VOCMetric)",
                 e['ppdet_mAP_11point'])):
            v = e['evaluate'][k]
            lines.append('| {} | {:.3f} | {:.1f} | {:.3f} | {:.1f} | {} |'
                         .format(label, v['wall_s'], v['images_per_s'],
                                 v['cpu_s'], v['images_per_cpu_s'],
                                 '{:.2f}'.format(100 * mp) if mp is not None
                                 else '-'))
    atomic_write(path, '\n'.join(lines) + '\n')
    return '\n'.join(lines)
