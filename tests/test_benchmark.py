"""The benchmark (bench/): its arithmetic (spreads, gap recovered, step
ratios, targets), its run plan, its report and plots, and real invocations
of tools/benchmark.py on tiny data."""
import dataclasses
import json
import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from conftest import ROOT, script
from bench.catalogue import catalogue
from bench.report import aggregate, write_report
from bench.targets import check_targets


def _run(method, seed, m11, step=0.1):
    return {'method': method, 'seed': seed,
            'mAP': {'11point': m11 / 100, 'area': m11 / 110},
            'train_images_per_sec': 8 / step, 'step_time_s': step,
            'peak_rss_mb': 700., 'eval_images_per_sec': 100.}


def _profile(base='demo', **changes):
    return dataclasses.replace(catalogue().profiles[base], **changes)


def _tiny_opts(demo_voc):
    from conftest import tiny_opts
    return [o for o in tiny_opts(demo_voc, 'unused')
            if not o.startswith('save_dir=')]


def test_gap_recovered_and_targets(tmp_path):
    runs = [_run('teacher', 0, 60, .3), _run('teacher', 1, 62, .3),
            _run('baseline', 0, 20), _run('baseline', 1, 22),
            _run('l2', 0, 40, .2), _run('l2', 1, 44, .2)]
    rows = aggregate(runs)
    assert rows['baseline']['mAP_11point']['mean'] == 21
    assert rows['l2']['mAP_11point']['spread'] == 4
    assert abs(rows['l2']['gap_recovered_11point'] - (42 - 21) / (61 - 21)) \
        < 1e-9
    assert 'gap_recovered_11point' not in rows['baseline']
    assert rows['l2']['step_time_vs_baseline'] == 2.0
    step_cost = {'ratio_distill_vs_student_plus_teacher': 1.2,
                 'loss_share_of_distill_step': 0.01,
                 'student_train_step': .1, 'teacher_inference_forward': .1,
                 'distill_step': .24, 'distill_loss_only': .0024,
                 'ratio_distill_vs_student': 2.4, 'batch_size': 8}
    targets = check_targets(rows, step_cost)
    assert {t: ok for t, ok, _ in targets} == {
        'l2 beats baseline by more than the seed spread': True,
        'some method recovers at least half of the gap': True,
        'distill step within 1.15x of student step + teacher forward': False,
        'distillation loss under 5% of a step': True}
    path = tmp_path / 'REPORT.md'
    write_report(rows, step_cost, str(path), 'python tools/benchmark.py',
                 _profile(budget_min=40), targets, run_wall_s=120.,
                 bench_wall_s=90., jobs=2)
    lines = path.read_text().splitlines()
    assert 'Wall time of this benchmark: **1.5 min** with 2 run(s) at a ' \
        'time (target for the whole benchmark: 40 min); training and ' \
        'evaluation time of the runs it trained, summed: 2.0 min.' in lines
    assert '| l2 | 42.00 ± 2.00 | 38.18 ± 1.82 | 52% / 53% | 40.0 | 2.00x | ' \
        '700 | 100.0 |' in lines
    assert '- distill step within 1.15x of student step + teacher forward: ' \
        '**NOT met** (1.200x)' in lines
    assert lines[4] == _profile().about
    # One seed has no spread: the spread target is not measured, not met.
    one = aggregate([r for r in runs if r['seed'] == 0])
    verdict = {t: ok for t, ok, _ in check_targets(one, None)}
    assert verdict['l2 beats baseline by more than the seed spread'] is None


def test_a_split_note_is_in_the_report_when_a_row_reads_the_split(tmp_path):
    """The note comes from the split's catalogue entry, for whichever rows
    read it."""
    path = tmp_path / 'REPORT.md'
    note = catalogue().splits['half']['note']
    for runs, printed in (([_run('baseline', 0, 20)], False),
                          ([_run('baseline_half', 0, 10)], True)):
        write_report(aggregate(runs), None, str(path), 'cmd', _profile())
        assert (note in path.read_text().splitlines()) is printed


def test_converged_goals_teacher_margin_and_plateau():
    from bench.targets import plateau_gain

    def curve(*pts):
        return [(s, {'11point': m / 100}) for s, m in pts]
    runs = [_run('teacher', 0, 45), _run('baseline', 0, 36),
            _run('baseline', 1, 35), _run('l2', 0, 38)]
    runs[1]['curve'] = curve((100, 20), (300, 35.5), (400, 36))
    runs[2]['curve'] = curve((100, 20), (290, 33), (310, 34.8), (400, 35))
    # 36 - 35.5 (step 300 <= 0.75 * 400)
    assert abs(plateau_gain(runs[1]) - 0.5) < 1e-9
    assert abs(plateau_gain(runs[2]) - 2.0) < 1e-9  # 35 - 33 (step 290)
    goals = {'teacher_min': 40., 'teacher_margin': 10., 'plateau_gain': 1.}
    res = {t: (ok, why) for t, ok, why in check_targets(
        aggregate(runs), None, runs, goals)}
    assert res['teacher at least 40 mAP'] == (True, 'teacher 45.00')
    assert res['teacher at least 10 points above the baseline'] == (
        False, 'teacher - baseline = +9.50')
    ok, why = res['baseline at its plateau: the last quarter of its steps '
                  'adds under 1 point']
    assert ok is False and why.endswith('+0.50, +2.00')


def test_plan_starts_the_distill_teacher_first_and_longest_runs_next():
    from bench.runner import plan
    demo = _profile(cost={'teacher': 3.8, 'train': 1.0, 'distill': 1.75})
    runs, needs = plan(['baseline', 'l2', 'teacher'], [1, 0], demo)
    assert runs == [('teacher', 0), ('teacher', 1), ('l2', 1), ('l2', 0),
                    ('baseline', 1), ('baseline', 0)]
    assert needs[('l2', 1)] == {('teacher', 0)} and not needs[('baseline', 0)]
    # Distilling without asking for the teacher still trains the seed-0 one.
    runs, _ = plan(['l2'], [3], demo)
    assert runs == [('teacher', 0), ('l2', 3)]
    # Longest by the profile's own costs and the row's cost_scale: 4
    # unlabeled images per step cost 0.7 of a distill run, 1.22 baselines
    # at distill 1.75, 0.84 at distill 1.2.
    mix = ['baseline', 'l2_half_unlabeled_ub4']
    assert plan(mix, [0], demo)[0][1:] == [('l2_half_unlabeled_ub4', 0),
                                           ('baseline', 0)]
    cheaper = _profile(cost={'teacher': 3.8, 'train': 1.0, 'distill': 1.2})
    assert plan(mix, [0], cheaper)[0][1:] == [
        ('baseline', 0), ('l2_half_unlabeled_ub4', 0)]


def test_a_run_is_the_users_command_with_the_rows_overrides(
        demo_voc, monkeypatch):
    """A distill row: distill.py with the profile's teacher and its seed-0
    weights, the row's overrides ({dataset_dir}: the training data), then
    the profile's and the user's; a train row: train.py with its role's
    config."""
    from bench.catalogue import Method
    from bench.runs import command
    monkeypatch.setitem(catalogue().methods, 'x_row', Method(
        'x_row', 'distill', 'student',
        ('distill_loss=kl', 'unlabeled_list={dataset_dir}/u.txt')))
    profile = _profile(opts=('TrainDataset.dataset_dir=' + demo_voc,))
    assert command('x_row', 1, 'out', profile, ['epoch=2']) == [
        sys.executable, 'slim/distillation/distill.py', '-c',
        'configs/demo/yolov3_mobilenet_v1_demo.yml', '-t',
        'configs/demo/yolov3_r34_demo.yml', '--teacher_pretrained',
        os.path.join('out', 'runs', 'teacher_s0', 'yolov3_r34_demo',
                     'model_final'),
        '--eval', '-o', 'distill_loss=kl', 'unlabeled_list={}/u.txt'.format(
            demo_voc), 'TrainDataset.dataset_dir=' + demo_voc, 'epoch=2',
        'save_dir=' + os.path.join('out', 'runs', 'x_row_s1'), 'seed=1']
    assert command('teacher', 0, 'out', profile)[1:4] == [
        'tools/train.py', '-c', 'configs/demo/yolov3_r34_demo.yml']
    # teacher_from: the weights of the other profile's teacher
    cmd = command('x_row', 0, 'out', dataclasses.replace(
        profile, teacher_from='elsewhere'))
    assert cmd[cmd.index('--teacher_pretrained') + 1] == os.path.join(
        'elsewhere', 'runs', 'teacher_s0', 'yolov3_r34_demo', 'model_final')


def _png(path):
    """(height, width, distinct colours) of a PNG, read back."""
    import matplotlib.image
    import numpy as np
    img = matplotlib.image.imread(path)
    return img.shape[0], img.shape[1], len(np.unique(
        img.reshape(-1, img.shape[2]), axis=0))


def test_benchmark_end_to_end_in_parallel(demo_voc, tmp_path):
    """tools/benchmark.py with two runs at a time on tiny data: the distilled
    student waits for and uses the seed-0 teacher; results, report and plots
    are written; a second invocation reuses every run."""
    tool = script('tools/benchmark.py')
    from bench.plots import map_curves
    out = str(tmp_path / 'bench')
    argv = ['--methods', 'teacher,baseline,l2', '--seeds', '0', '--jobs',
            '2', '--no_profile', '--out', out, '-o'] + _tiny_opts(demo_voc)
    tool.main(argv)
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    assert set(res['methods']) == {'teacher', 'baseline', 'l2'}
    assert [(r['method'], r['steps']) for r in res['runs']] == [
        ('teacher', 8), ('l2', 8), ('baseline', 8)]  # 32 images / batch 4
    from detdistill.data.demo import dataset_digest
    assert res['data']['sha256'] == dataset_digest(demo_voc)
    assert res['data']['pinned_default'] is False  # 40 images, not the 800
    with open(os.path.join(out, 'runs', 'l2_s0', 'train.log')) as f:
        assert os.path.join('teacher_s0', 'yolov3_r34_demo',
                            'model_final') in f.read()
    # The mAP plot shows each row's one eval, at the last step.
    curves = map_curves(res['runs'])
    assert {m: (c[0], c[4]) for m, c in curves.items()} == {
        m: ([8], 1) for m in ('teacher', 'l2', 'baseline')}
    assert curves['l2'][1][0] == pytest.approx(
        res['methods']['l2']['mAP_11point']['mean'])
    # 7 x 4.5 in and two 4 x 3.8 in student panels at 90 dpi, not blank
    h, w, colours = _png(os.path.join(out, 'map_curves.png'))
    assert (h, w) == (405, 630) and colours > 10
    h, w, colours = _png(os.path.join(out, 'loss_curves.png'))
    assert (h, w) == (342, 720) and colours > 10
    assert 'Wall time of this benchmark' in open(
        os.path.join(out, 'REPORT.md')).read()
    tool.main(argv)  # everything reused: nothing retrained
    assert 'were reused' in open(os.path.join(out, 'REPORT.md')).read()
    # --report_only trains nothing and names what has not run.
    tool.main(['--methods', 'teacher,baseline,l2,kl'] + argv[2:] +
              ['--report_only'])
    assert not os.path.exists(os.path.join(out, 'runs', 'kl_s0'))
    text = open(os.path.join(out, 'REPORT.md')).read()
    assert '**Not finished yet** (this report covers the finished runs ' \
        'only): kl seed 0.' in text
    assert '| l2 |' in text and '| kl |' not in text
    with open(os.path.join(out, 'results.json')) as f:
        assert json.load(f)['not_finished'] == [['kl', 0]]


def test_plots_draw_the_rows_series():
    """What the pictures show: mAP mean and range over the seeds that share
    the first seed's eval steps; the first seed's loss components of every
    student row; the distill/det ratio of distilled runs."""
    from bench.plots import loss_curves, loss_ratio_series, map_curves

    def run(method, seed, maps, losses=()):
        return dict(_run(method, seed, 0), curve=[
            (s, {'11point': m / 100}) for s, m in maps], losses=list(losses))
    runs = [run('teacher', 0, [(10, 30), (20, 50)]),
            run('l2', 0, [(10, 10), (20, 20)], [
                {'step': 10, 'loss': 5., 'det_loss': 4., 'distill_loss': 1.},
                {'step': 20, 'loss': 3., 'det_loss': 2., 'distill_loss': 1.}]),
            run('l2', 1, [(10, 14), (20, 30)]),
            run('l2', 2, [(20, 99)])]  # other steps: not averaged in
    curves = map_curves(runs)
    steps, mean, low, high, n = curves['l2']
    assert (steps, n) == ([10, 20], 2)
    assert list(mean) == pytest.approx([12., 25.])
    assert list(low) == pytest.approx([10., 20.])
    assert list(high) == pytest.approx([14., 30.])
    assert list(curves['teacher'][1]) == pytest.approx([30., 50.])
    assert loss_curves(runs) == {'l2': (0, {
        'loss': [(10, 5.), (20, 3.)], 'det_loss': [(10, 4.), (20, 2.)],
        'distill_loss': [(10, 1.), (20, 1.)]})}
    assert loss_ratio_series(runs[1]) == [(10, 0.25), (20, 0.5)]


def test_profile_measures_every_variant_and_writes_a_report(demo_voc,
                                                            tmp_path):
    """tools/dev/profile_step.py's measurements on tiny data: the eager and
    to_static steps run (an error in either fails here); bf16 AMP runs
    or Paddle declines it on this device, nothing else; the loader is timed
    with and without a worker, and two processes time their steps
    together."""
    from conftest import tiny_opts
    from bench.speedups import measure, write_profile
    res = measure(_profile(), repeats=2, jobs=2,
                  opts=tiny_opts(demo_voc, str(tmp_path)))
    step = res['step']
    assert step['eager'] > 0 and step['to_static'] > 0
    assert step['batch_size'] == 4
    assert 'amp_bf16' in step or step['amp_bf16_error'].startswith(
        'Paddle: amp_guard can only be enabled on')
    assert [k for k in step if k.endswith('_error')] in (
        [], ['amp_bf16_error'])
    assert res['loader'][0] > 0 and res['loader'][1] > 0
    assert len(res['processes'][1]) == 1 and len(res['processes'][2]) == 2
    assert all(t > 0 for t in res['processes'][2])
    assert isinstance(res['to_static_distiller_differs'], list)
    text = write_profile(res, str(tmp_path / 'PROFILE.md'), 'cmd')
    assert "the demo profile's student (configs/demo/" \
        "yolov3_mobilenet_v1_demo.yml), batch 4" in text
    assert '| eager | {:.4f} | 1.00x |'.format(step['eager']) in text
    assert '2 processes' in text
    assert (tmp_path / 'PROFILE.md').read_text().strip() == text.strip()


def test_eta_replays_the_schedule_with_its_waits():
    """Two workers, the distill teacher has 100 s left: the idle worker takes
    the next ready run, and the distill runs wait for that teacher."""
    from bench.eta import simulate_eta
    from bench.runner import plan
    runs, needs = plan(['teacher', 'baseline', 'l2'], [0, 1], _profile())
    secs = {'teacher': 300., 'baseline': 50., 'l2': 80.}
    pending = [r for r in runs if r != ('teacher', 0)]
    eta = simulate_eta(pending, needs, {('teacher', 0): 100.}, 2,
                       lambda r: secs[r[0]])
    # B: teacher s1 (next in plan, ready) 0-300, then baseline s1 300-350;
    # A: teacher s0 to 100, l2 s0 100-180, l2 s1 180-260, baseline s0 to 310.
    assert eta == 350.
    # One worker: everything in a row.
    assert simulate_eta(pending, needs, {('teacher', 0): 100.}, 1,
                        lambda r: secs[r[0]]) == 100 + 300 + 2 * 80 + 2 * 50


def _eta(profile, pending, running, finished, jobs=2):
    from bench.eta import estimate
    from bench.runner import cost
    return estimate(pending, {r: set() for r in list(pending) + list(
        running) + list(finished)}, jobs, running, finished,
        lambda r: cost(r[0], profile),
        lambda r: catalogue().methods[r[0]].kind)


def test_eta_of_the_main_job_comes_from_the_students_own_steps():
    """The main job (the quick profile): the teacher is evaluated, not
    trained (cost 0.05), then the baseline and L2 students train side by
    side. Scaling the evaluation's 11.3 s by the cost ratios printed 'ETA
    272s' for a 10-minute run; the evaluation says nothing about training:
    until a student logs steps the ETA is unknown, then it is each
    student's own seconds per step times its steps left."""
    quick = _profile('quick', cost={'teacher': 0.05, 'train': 1.0,
                                    'distill': 1.2})
    T, B, L = ('teacher', 0), ('baseline', 0), ('l2', 0)
    evaluated = {T: (11.3, False)}
    # the first report: the teacher done, the baseline started, l2 next
    assert _eta(quick, [L], {B: (11.3, 0, 0)}, evaluated) is None
    assert _eta(quick, [], {B: (30., 0, 0), L: (18., 0, 0)},
                evaluated) is None
    # the baseline has logged 320 of 3200 steps in 60 s: 540 s left, 600 s
    # a train run; l2 borrows it through the cost ratio: 720 - 48 s left
    assert _eta(quick, [], {B: (60., 320, 3200), L: (48., 0, 0)},
                evaluated) == pytest.approx(672.)
    # both logging: their own rates (l2 the slower: 2000 steps at 0.24 s)
    assert _eta(quick, [], {B: (300., 1600, 3200), L: (288., 1200, 3200)},
                evaluated) == pytest.approx(480.)
    # another evaluated teacher takes the evaluation's own length
    assert _eta(quick, [('teacher', 1)], {}, evaluated) == pytest.approx(11.3)


def test_eta_of_pending_runs_from_their_kind_then_the_cost_ratios():
    """One worker: a pending row takes its kind's measured seconds per cost
    unit (times its cost_scale); a kind not measured yet (the teacher) the
    training runs' through the profile's cost ratio."""
    converged = _profile('converged', cost={'teacher': 3.8, 'train': 1.0,
                                            'distill': 1.2})
    eta = _eta(converged,
               [('l2_half', 0), ('baseline', 1), ('teacher', 1)],
               {('l2', 0): (60., 100, 200)},  # 60 s left, 120 s a run
               {('baseline', 0): (100., True)}, jobs=1)
    # 60 left + l2_half 0.5 x 120 + baseline 100 + teacher 3.8 x 100
    assert eta == pytest.approx(60 + 60 + 100 + 380)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(demo_voc,
                                                             tmp_path):
    """A benchmark killed mid-run (here: the summary and the epoch-1 and
    final checkpoints removed, the state after a kill during epoch 1) picks
    the run up from its epoch-0 checkpoint and ends with the weights and
    mAP of the uninterrupted run."""
    import numpy as np
    import paddle
    tool = script('tools/benchmark.py')
    from conftest import tiny_opts
    from bench.runs import last_checkpoint
    opts = [o for o in tiny_opts(demo_voc, 'unused', 2)
            if not o.startswith('save_dir=')]
    out = str(tmp_path / 'bench')
    argv = ['--methods', 'baseline', '--seeds', '0', '--jobs', '1',
            '--no_profile', '--out', out, '-o'] + opts
    tool.main(argv)
    run = os.path.join(out, 'runs', 'baseline_s0')
    ck = os.path.join(run, 'yolov3_mobilenet_v1_demo')
    first = json.load(open(os.path.join(run, 'summary.json')))
    weights = paddle.load(os.path.join(ck, 'model_final.pdparams'))
    assert first['resumed_from'] is None
    os.remove(os.path.join(run, 'summary.json'))
    for name in os.listdir(ck):
        if name.startswith(('1.', 'model_final.', 'best_model.')):
            os.remove(os.path.join(ck, name))
    open(os.path.join(ck, '5.pdparams'), 'w').close()  # no .pdopt: ignored
    assert last_checkpoint(run, 'x/yolov3_mobilenet_v1_demo.yml') == \
        os.path.join(ck, '0')
    os.remove(os.path.join(ck, '5.pdparams'))
    tool.main(argv)
    second = json.load(open(os.path.join(run, 'summary.json')))
    assert second['resumed_from'] == os.path.join(ck, '0')
    assert second['mAP'] == first['mAP'] and second['steps'] == 16
    again = paddle.load(os.path.join(ck, 'model_final.pdparams'))
    for k in weights:
        np.testing.assert_array_equal(weights[k].numpy(), again[k].numpy())


def test_a_teacher_from_another_benchmark_is_evaluated_not_retrained(
        demo_voc, tmp_path, monkeypatch):
    """A profile with `teacher_from` (the main job's `quick`) distils from
    that benchmark's seed-0 teacher: the teacher row is tools/eval.py on
    those weights, here, with nothing trained."""
    tool = script('tools/benchmark.py')
    opts = _tiny_opts(demo_voc)
    first, second = str(tmp_path / 'first'), str(tmp_path / 'second')
    tool.main(['--methods', 'teacher', '--seeds', '0', '--no_profile',
               '--out', first, '-o'] + opts)
    monkeypatch.setitem(catalogue().profiles, 'tiny_from',
                        _profile(name='tiny_from', teacher_from=first))
    tool.main(['--profile', 'tiny_from', '--methods', 'teacher,l2', '--seeds',
               '0', '--jobs', '2', '--no_profile', '--out', second, '-o'] +
              opts)
    with open(os.path.join(first, 'runs', 'teacher_s0', 'summary.json')) as f:
        trained = json.load(f)
    with open(os.path.join(second, 'runs', 'teacher_s0', 'summary.json')) \
            as f:
        evaluated = json.load(f)
    # the same weights on the same data and machine: the same mAP, measured
    # again (eval.json is tools/eval.py's own output)
    with open(os.path.join(second, 'runs', 'teacher_s0', 'eval.json')) as f:
        assert json.load(f)['mAP'] == evaluated['mAP'] == trained['mAP']
    assert evaluated['trained_in'] == first
    assert evaluated['steps'] == trained['steps'] == 8
    assert not os.path.exists(os.path.join(second, 'runs', 'teacher_s0',
                                           'yolov3_r34_demo'))
    with open(os.path.join(second, 'runs', 'l2_s0', 'train.log')) as f:
        assert os.path.join(first, 'runs', 'teacher_s0', 'yolov3_r34_demo',
                            'model_final') in f.read()


def test_sweep_table_compares_weights_at_one_seed(tmp_path):
    """The sweep rows and the profile's rows with a loss they vary, seed 0
    only, by loss then weight, with the logged distill/det ratio at the end;
    loss and weight as the library resolves each row's config."""
    from bench.report import loss_weight, sweep_table
    converged = _profile('converged')
    assert loss_weight('l2', converged) == ('l2', 'L2Distill', 100.)
    assert loss_weight('l2_w1000', converged) == ('l2', 'L2Distill', 1000.)
    assert loss_weight('fine_grained', converged) == (
        'fine_grained', 'FineGrainedDistill', 1000.)
    assert loss_weight('fine_grained_soft', converged) == (
        'fine_grained (obj_target=soft)', 'FineGrainedDistill', 1000.)
    assert loss_weight('kl_softmax', converged) == (
        'kl (cls_form=softmax)', 'KLDistill', 1000.)
    runs = [_run('baseline', 0, 20), _run('l2', 0, 40), _run('l2', 1, 44),
            _run('l2_w10', 0, 30), _run('fine_grained_w10', 0, 25),
            _run('fine_grained', 0, 33), _run('kl', 0, 35),
            _run('l2_half', 0, 15)]
    for r in runs:
        r['losses'] = [{'step': 10, 'det_loss': 4., 'distill_loss': 2.},
                       {'step': 20, 'det_loss': 2., 'distill_loss': 3.}]
    profile = dataclasses.replace(
        converged, methods=('teacher', 'baseline', 'l2', 'fine_grained',
                            'kl'), sweep=('l2_w10', 'fine_grained_w10'))
    table = sweep_table(runs, profile, seed=0)
    # kl: a loss the sweep does not vary; l2_half: not a profile row
    assert [(m, w) for m, _, w, *_ in table] == [
        ('fine_grained_w10', 10.), ('fine_grained', 1000.), ('l2_w10', 10.),
        ('l2', 100.)]
    assert table[-1][3:] == (40., 100 * (40 / 110), 1.5)
    rows = aggregate(runs)
    path = tmp_path / 'REPORT.md'
    write_report(rows, None, str(path), 'cmd', profile, sweep=table)
    assert '| l2_w10 | l2 | 10 | 30.00 | 27.27 | 1.5 |' in path.read_text()
    assert sweep_table(runs, dataclasses.replace(profile, sweep=())) == []


def test_report_only_and_other_seeds_read_finished_runs(tmp_path):
    """A sweep row rerun at more seeds is reported with its row; a planned
    run without a summary is named as not finished."""
    from bench.runner import finished_summaries, other_seeds, with_finished
    from bench.runs import run_dir
    out, demo = str(tmp_path), _profile()
    for m, s in (('teacher', 0), ('l2', 0), ('l2_w10', 0), ('l2_w10', 2)):
        os.makedirs(run_dir(out, m, s))
        with open(os.path.join(run_dir(out, m, s), 'summary.json'), 'w') as f:
            json.dump(_run(m, s, 30), f)
    done, missing = finished_summaries(['teacher', 'l2', 'l2_w10'], [0, 1, 2],
                                       out, demo, one_seed=['teacher',
                                                            'l2_w10'])
    assert [(r['method'], r['seed']) for r in done] == [
        ('teacher', 0), ('l2', 0), ('l2_w10', 0)]
    assert all(r['reused'] for r in done)
    assert missing == [('l2', 1), ('l2', 2)]
    extra = other_seeds(['teacher', 'l2', 'l2_w10'], [0, 1, 2], out,
                        ['teacher', 'l2_w10'])
    assert [(r['method'], r['seed']) for r in extra] == [('l2_w10', 2)]
    # an on-request distill row adds itself, not its teacher a second time
    assert [(r['method'], r['seed']) for r in with_finished(
        done[:2], ['l2_w10'], [0, 1, 2], out, demo)] == [
        ('teacher', 0), ('l2', 0), ('l2_w10', 0), ('l2_w10', 2)]


def test_half_label_rows_compare_with_the_labeled_half():
    """Rows on the half split: gaps from their baseline row, and the
    profile's pairs, l2_half_unlabeled against l2_half beyond the seed
    spread."""
    runs = [_run('teacher', 0, 50), _run('baseline_half', 0, 10),
            _run('baseline_half', 1, 12), _run('l2_half', 0, 20),
            _run('l2_half', 1, 23), _run('l2_half_unlabeled', 0, 26),
            _run('l2_half_unlabeled', 1, 28),
            _run('l2_half_unlabeled_uw3', 0, 22),
            _run('l2_half_unlabeled_uw3', 1, 26)]
    rows = aggregate(runs)
    assert rows['l2_half_unlabeled']['gap_recovered_11point'] == \
        (27 - 11) / (50 - 11)
    assert 'gap_recovered_11point' not in rows['baseline_half']
    goals = {'pairs': [('l2_half_unlabeled', 'l2_half'),
                       ('l2_half_unlabeled_uw3', 'l2_half')]}
    res = {t: (ok, why) for t, ok, why in check_targets(
        rows, None, runs, goals)}
    assert res['l2_half_unlabeled beats l2_half by more than the seed '
               'spread'] == (True, 'l2_half_unlabeled - l2_half = +5.50, '
                             'largest seed spread 3.00')
    assert res['l2_half_unlabeled_uw3 beats l2_half by more than the seed '
               'spread'][0] is False  # +2.50 < spread 4
    assert res['l2_half beats baseline_half by more than the seed '
               'spread'] == (True, 'l2_half - baseline_half = +10.50, '
                             'largest seed spread 3.00')


def test_same_within_spread_for_the_fast_teacher_rows():
    """`same` targets: two rows agree within the larger seed spread, judged
    both ways round; one seed without a known spread is not judged."""
    runs = [_run('l2_compiled', 0, 26), _run('l2_compiled', 1, 27),
            _run('l2_plain', 0, 27.5), _run('l2_plain', 1, 26.5),
            _run('l2', 0, 30), _run('l2', 1, 31), _run('l2_bf16', 0, 30.25)]
    goals = {'same': [('l2_compiled', 'l2_plain'), ('l2', 'l2_plain'),
                      ('l2_bf16', 'l2')]}
    res = {t: (ok, why) for t, ok, why in check_targets(
        aggregate(runs), None, runs, goals)}
    assert res['l2_compiled equals l2_plain within the seed spread'] == (
        True, 'l2_compiled - l2_plain = -0.50, largest seed spread 1.00')
    assert res['l2 equals l2_plain within the seed spread'] == (
        False, 'l2 - l2_plain = +3.50, largest seed spread 1.00')
    assert res['l2_bf16 equals l2 within the seed spread'] == (
        None, 'l2_bf16 - l2 = -0.25, seed spread unknown with one seed')
    known = {'spread': 0.5, 'measured_by': 'an earlier run'}
    res = {t: (ok, why) for t, ok, why in check_targets(
        aggregate(runs), None, runs, dict(goals, one_seed_spread=known))}
    assert res['l2_bf16 equals l2 within the seed spread'] == (
        True, 'l2_bf16 - l2 = -0.25, one seed; seed spread 0.50 as measured '
        'by an earlier run')


def test_a_bare_run_leaves_the_sweep_to_methods_sweep(demo_voc, tmp_path,
                                                      monkeypatch):
    """A bare `--profile P` plans the profile's methods only (the ~2 h
    budget); `--methods sweep` plans the sweep rows at the first seed, with
    their teacher; a finished sweep run is reported by either."""
    import shutil
    tool = script('tools/benchmark.py')
    from conftest import tiny_opts
    from bench.runs import run_dir
    monkeypatch.setitem(catalogue().profiles, 'tiny_sweep', _profile(
        name='tiny_sweep', methods=('teacher', 'baseline', 'l2'),
        sweep=('l2_w10', 'l2_w1000'), one_teacher=True))
    out = str(tmp_path / 'out')
    os.makedirs(run_dir(out, 'l2_w10', 0))
    # a finished run as the benchmark writes it (curves and losses too)
    shutil.copy(os.path.join(ROOT, 'results', 'converged', 'runs',
                             'l2_w10_s0', 'summary.json'),
                run_dir(out, 'l2_w10', 0))
    opts = tiny_opts(demo_voc, str(tmp_path / 'unused'))

    def planned(*methods):
        tool.main(['--profile', 'tiny_sweep', '--seeds', '0,1',
                   '--report_only', '--out', out] + list(methods) +
                  ['-o'] + opts)
        with open(os.path.join(out, 'results.json')) as f:
            res = json.load(f)
        return (res['not_finished'],
                sorted((r['method'], r['seed']) for r in res['runs']))

    assert planned() == (
        [['teacher', 0], ['l2', 0], ['l2', 1], ['baseline', 0],
         ['baseline', 1]], [('l2_w10', 0)])
    assert planned('--methods', 'sweep') == (
        [['teacher', 0], ['l2_w1000', 0]], [('l2_w10', 0)])


# A tool's main (main_guard: SIGUSR1 dumps stacks, SIGTERM exits 143) that
# never ends.
_STUCK_CHILD = textwrap.dedent('''
    import threading
    from detdistill.cli import main_guard

    @main_guard
    def main():
        print('started', flush=True)
        threading.Event().wait()

    main()
''')


def test_a_stuck_run_is_stopped_with_its_stacks_in_the_log(tmp_path):
    """A benchmark child whose log stops growing is a hang: it is ended and
    its threads' stacks are in its log, instead of the benchmark waiting."""
    from bench.watch import run_watched
    log = str(tmp_path / 'train.log')
    with pytest.raises(RuntimeError, match='wrote nothing for 3 s'):
        run_watched([sys.executable, '-c', _STUCK_CHILD],
                    log, stall_s=3)
    text = open(log).read()
    assert text.startswith('started')
    assert 'Current thread' in text and 'in main' in text, text


def test_a_stopped_benchmark_ends_its_children(tmp_path):
    """Ctrl-C or SIGTERM on the benchmark (STOP) ends a running child with
    SIGTERM (exit 143 from the tools' handler) instead of waiting for it."""
    from bench.watch import STOP, run_watched
    log = str(tmp_path / 'train.log')

    def stop_once_started():  # the child's handlers are set by then
        deadline = time.time() + 120
        while time.time() < deadline and not (
                os.path.exists(log) and 'started' in open(log).read()):
            time.sleep(0.1)
        STOP.set()
    threading.Thread(target=stop_once_started, daemon=True).start()
    try:
        code = run_watched([sys.executable, '-c', _STUCK_CHILD], log,
                           stall_s=600)
    finally:
        STOP.clear()
    assert code == 128 + signal.SIGTERM


def test_a_teacher_summary_without_weights_is_trained_again(demo_voc,
                                                            tmp_path):
    """Committed results keep a teacher's summary, not always its weights: a
    distill row asked for later must not fail on the missing file, the
    teacher is trained again (the same weights: same seed, data and machine)
    and its earlier record is kept beside the new one."""
    import numpy as np
    import paddle
    tool = script('tools/benchmark.py')
    out = str(tmp_path / 'bench')
    argv = ['--seeds', '0', '--jobs', '1', '--no_profile', '--out', out,
            '-o'] + _tiny_opts(demo_voc)
    tool.main(['--methods', 'teacher'] + argv)
    run = os.path.join(out, 'runs', 'teacher_s0')
    weights = os.path.join(run, 'yolov3_r34_demo', 'model_final.pdparams')
    first = paddle.load(weights)
    with open(os.path.join(run, 'summary.json')) as f:
        record = json.load(f)
    tool.main(['--methods', 'baseline'] + argv)  # no distill row: reused
    assert not os.path.exists(os.path.join(run, 'summary.previous.json'))
    for name in os.listdir(os.path.join(run, 'yolov3_r34_demo')):
        os.remove(os.path.join(run, 'yolov3_r34_demo', name))
    tool.main(['--methods', 'l2'] + argv)
    with open(os.path.join(run, 'summary.previous.json')) as f:
        assert json.load(f) == record
    with open(os.path.join(run, 'summary.json')) as f:
        again = json.load(f)
    assert again['mAP'] == record['mAP'] and again['steps'] == 8
    second = paddle.load(weights)
    for k in first:
        np.testing.assert_array_equal(first[k].numpy(), second[k].numpy())
    assert os.path.isfile(os.path.join(out, 'runs', 'l2_s0', 'summary.json'))


def test_step_cost_of_each_row_against_the_plain_student(demo_voc, tmp_path,
                                                         teacher_weights):
    """tools/dev/profile_step.py --methods: one interleaved timing of the
    plain student and each named distill row (a logit loss, a feature loss
    with connectors, both), their ratios from those medians, and the table."""
    tool = script('tools/dev/profile_step.py')
    out = str(tmp_path / 'STEP_COST.md')
    tool.main(['--profile', 'demo', '--methods', 'l2,cwd,l2_auto_cwd',
               '--repeats', '2', '--out', out,
               '--teacher_weights', 'demo=' + teacher_weights,
               '-o'] + _tiny_opts(demo_voc))
    with open(os.path.splitext(out)[0] + '.json') as f:
        res = json.load(f)
    assert list(res) == ['student_train_step', 'l2', 'cwd', 'l2_auto_cwd']
    base = res['student_train_step']['cpu_s']
    for m in ('l2', 'cwd', 'l2_auto_cwd'):
        assert res[m]['repeats'] == 2
        assert res[m]['vs_student'] == res[m]['cpu_s'] / base
        assert 0 < res[m]['loss_share'] < 1
    text = open(out).read()
    assert '| cwd | {:.4f} | {:.4f} | {:.2f}x | {:.0%} |'.format(
        res['cwd']['wall_s'], res['cwd']['cpu_s'], res['cwd']['vs_student'],
        res['cwd']['loss_share']) in text
