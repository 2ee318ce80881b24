"""The benchmark: its arithmetic (spreads, gap recovered, step ratios,
targets), its run plan, and one real parallel invocation on tiny data."""
import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from conftest import ROOT
from detdistill import benchmark as bm
from detdistill.benchmark import aggregate, check_targets, write_report


def _run(method, seed, m11, step=0.1):
    return {'method': method, 'seed': seed,
            'mAP': {'11point': m11 / 100, 'area': m11 / 110},
            'train_images_per_sec': 8 / step, 'step_time_s': step,
            'peak_rss_mb': 700., 'eval_images_per_sec': 100.}


def test_gap_recovered_and_targets(tmp_path):
    runs = [_run('teacher', 0, 60, .3), _run('teacher', 1, 62, .3),
            _run('baseline', 0, 20), _run('baseline', 1, 22),
            _run('l2', 0, 40, .2), _run('l2', 1, 44, .2)]
    rows = aggregate(runs)
    assert rows['baseline']['mAP_11point']['mean'] == 21
    assert rows['l2']['mAP_11point']['spread'] == 4
    assert abs(rows['l2']['gap_recovered_11point'] - (42 - 21) / (61 - 21)) \
        < 1e-9
    assert rows['l2']['step_time_vs_baseline'] == 2.0
    profile = {'ratio_distill_vs_student_plus_teacher': 1.2,
               'loss_share_of_distill_step': 0.01,
               'student_train_step': .1, 'teacher_inference_forward': .1,
               'distill_step': .24, 'distill_loss_only': .0024,
               'ratio_distill_vs_student': 2.4, 'batch_size': 8}
    met = {t: ok for t, ok, _ in check_targets(rows, profile)}
    assert met == {'l2 beats baseline by more than the seed spread': True,
                   'some method recovers at least half of the gap': True,
                   'distill step within 1.15x of student step + teacher '
                   'forward': False,
                   'distillation loss under 5% of a step': True}
    path = tmp_path / 'REPORT.md'
    write_report(rows, profile, str(path), 'python tools/benchmark.py',
                 check_targets(rows, profile))
    text = path.read_text()
    assert '| l2 | 42.00 ± 2.00 |' in text and 'NOT met' in text
    # One seed has no spread: the spread target is not measured, not met.
    one = aggregate([r for r in runs if r['seed'] == 0])
    verdict = {t: ok for t, ok, _ in check_targets(one, None)}
    assert verdict['l2 beats baseline by more than the seed spread'] is None


def test_converged_goals_teacher_margin_and_plateau():
    from detdistill.benchmark import PROFILES, plateau_gain

    def curve(*pts):
        return [(s, {'11point': m / 100}) for s, m in pts]
    runs = [_run('teacher', 0, 45), _run('baseline', 0, 36),
            _run('baseline', 1, 35), _run('l2', 0, 38)]
    runs[1]['curve'] = curve((100, 20), (300, 35.5), (400, 36))
    runs[2]['curve'] = curve((100, 20), (290, 33), (310, 34.8), (400, 35))
    assert abs(plateau_gain(runs[1]) - 0.5) < 1e-9  # 36 - 35.5 (step 300 <= 0.75*400)
    assert abs(plateau_gain(runs[2]) - 2.0) < 1e-9  # 35 - 33 (step 290)
    res = {t: (ok, why) for t, ok, why in check_targets(
        aggregate(runs), None, runs, PROFILES['converged']['targets'])}
    assert res['teacher at least 40 mAP'] == (True, 'teacher 45.00')
    assert res['teacher at least 10 points above the baseline'] == (
        False, 'teacher - baseline = +9.50')
    ok, why = res['baseline at its plateau: the last quarter of its steps '
                  'adds under 1 point']
    assert ok is False and why.endswith('+0.50, +2.00')


def test_plan_starts_the_distill_teacher_first_and_longest_runs_next():
    from detdistill.benchmark import plan
    runs, needs = plan(['baseline', 'l2', 'teacher'], [1, 0])
    assert runs[0] == ('teacher', 0) and ('teacher', 1) in runs
    assert runs.index(('l2', 1)) < runs.index(('baseline', 1))
    assert needs[('l2', 1)] == {('teacher', 0)} and not needs[('baseline', 0)]
    # Distilling without asking for the teacher still trains the seed-0 one.
    runs, _ = plan(['l2'], [3])
    assert runs == [('teacher', 0), ('l2', 3)]
    # Longest by the profile's own costs: 4 unlabeled images per step cost
    # 0.7 of a distill run, 1.22 baselines on the demo, 0.84 converged.
    mix = ['baseline', 'l2_half_unlabeled_ub4']
    assert plan(mix, [0])[0][1:] == [('l2_half_unlabeled_ub4', 0),
                                     ('baseline', 0)]
    assert plan(mix, [0], profile='converged')[0][1:] == [
        ('baseline', 0), ('l2_half_unlabeled_ub4', 0)]


def test_benchmark_end_to_end_in_parallel(demo_voc, tmp_path):
    """tools/benchmark.py with two runs at a time on tiny data: the distilled
    student waits for and uses the seed-0 teacher; results, report and plots
    are written; a second invocation reuses every run."""
    import json
    import benchmark as tool
    from conftest import tiny_opts
    opts = [o for o in tiny_opts(demo_voc, 'unused')
            if not o.startswith('save_dir=')]
    out = str(tmp_path / 'bench')
    argv = ['--methods', 'teacher,baseline,l2', '--seeds', '0', '--jobs',
            '2', '--no_profile', '--out', out, '-o'] + opts
    tool.main(argv)
    with open(os.path.join(out, 'results.json')) as f:
        res = json.load(f)
    assert set(res['methods']) == {'teacher', 'baseline', 'l2'}
    assert all(r['steps'] == 8 for r in res['runs'])  # 32 images / batch 4
    from detdistill.data.demo import dataset_digest
    assert res['data']['sha256'] == dataset_digest(demo_voc)
    assert res['data']['pinned_default'] is False  # 40 images, not the 800
    with open(os.path.join(out, 'runs', 'l2_s0', 'train.log')) as f:
        assert os.path.join('teacher_s0', 'yolov3_r34_demo',
                            'model_final') in f.read()
    for name in ('REPORT.md', 'map_curves.png', 'loss_curves.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0
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


def test_profile_measures_every_variant_and_writes_a_report(demo_voc,
                                                            tmp_path):
    """tools/dev/profile_step.py's measurements on tiny data: eager, to_static and
    bf16-AMP steps all run (or report their error), the loader is timed with
    and without a worker, and two processes time their steps together."""
    from conftest import tiny_opts
    from detdistill.profiling import profile, write_profile
    opts = tiny_opts(demo_voc, str(tmp_path))
    res = profile(repeats=2, jobs=2, opts=opts)
    step = res['step']
    for k in ('eager', 'to_static', 'amp_bf16'):
        assert step.get(k, 0) > 0 or k + '_error' in step
    assert step['eager'] > 0 and step['batch_size'] == 4
    assert res['loader'][0] > 0 and res['loader'][1] > 0
    assert len(res['processes'][1]) == 1 and len(res['processes'][2]) == 2
    assert isinstance(res['to_static_distiller_differs'], list)
    text = write_profile(res, str(tmp_path / 'PROFILE.md'), 'cmd')
    assert '| eager |' in text and '2 processes' in text
    assert (tmp_path / 'PROFILE.md').read_text().strip() == text.strip()


def test_eta_replays_the_schedule_with_its_waits():
    """Two workers, the distill teacher has 100 s left: the idle worker takes
    the next ready run, and the distill runs wait for that teacher."""
    from detdistill.benchmark import plan, simulate_eta
    runs, needs = plan(['teacher', 'baseline', 'l2'], [0, 1])
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


def test_an_interrupted_run_resumes_from_its_last_checkpoint(demo_voc,
                                                             tmp_path):
    """A benchmark killed mid-run (here: the summary and the epoch-1 and
    final checkpoints removed, the state after a kill during epoch 1) picks
    the run up from its epoch-0 checkpoint and ends with the weights and
    mAP of the uninterrupted run."""
    import json
    import numpy as np
    import paddle
    import benchmark as tool
    from conftest import tiny_opts
    from detdistill.benchmark import last_checkpoint
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
    import json
    import benchmark as tool
    from conftest import tiny_opts
    from detdistill import benchmark as bm
    opts = [o for o in tiny_opts(demo_voc, 'unused')
            if not o.startswith('save_dir=')]
    first, second = str(tmp_path / 'first'), str(tmp_path / 'second')
    tool.main(['--methods', 'teacher', '--seeds', '0', '--no_profile',
               '--out', first, '-o'] + opts)
    monkeypatch.setitem(bm.PROFILES, 'tiny_from',
                        dict(bm.PROFILES['demo'], teacher_from=first))
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


def test_the_main_job_is_the_converged_seed_0_rows_with_its_teacher():
    """run_demo.sh's `quick` profile is the converged profile's data,
    configs and schedule, distilling from the teacher that profile trained,
    whose weights are in the repository."""
    from conftest import ROOT
    from detdistill.benchmark import PROFILES, command
    quick, conv = PROFILES['quick'], PROFILES['converged']
    for key in ('student', 'teacher', 'opts', 'data', 'make_data'):
        assert quick[key] == conv[key], key
    assert quick['pinned'] == 'converged'
    cmd = command('l2', 0, 'output/quick', profile='quick')
    weights = cmd[cmd.index('--teacher_pretrained') + 1]
    assert weights == os.path.join('results/converged', 'runs',
                                   'teacher_s0', 'yolov3_r34_converged',
                                   'model_final')
    assert os.path.isfile(os.path.join(ROOT, weights + '.pdparams'))
    with open(os.path.join(ROOT, 'tools', 'run_demo.sh')) as f:
        assert '--profile quick --seeds 0' in f.read()


def test_gfl_demo_profile_runs_the_gfl_configs_with_ld():
    """The gfl_demo rows are data: the GFL demo configs in the student and
    teacher roles, LD overrides that the student config accepts."""
    import sys
    from conftest import ROOT
    from detdistill.benchmark import command
    from detdistill.config import load_config
    assert command('ld', 1, 'out', profile='gfl_demo') == [
        sys.executable, 'slim/distillation/distill.py', '-c',
        'configs/demo/gfl_r18_demo.yml', '-t', 'configs/demo/gfl_r34_demo.yml',
        '--teacher_pretrained', os.path.join(
            'out', 'runs', 'teacher_s0', 'gfl_r34_demo', 'model_final'),
        '--eval', '-o', 'save_dir=' + os.path.join('out', 'runs', 'ld_s1'),
        'seed=1', 'distill_loss=ld', 'LDDistill.vlr_ld_weight=0']
    assert command('ld_vlr', 0, 'out', profile='gfl_demo')[-1] == \
        'distill_loss=ld'
    assert command('teacher', 0, 'out', profile='gfl_demo')[1:4] == [
        'tools/train.py', '-c', 'configs/demo/gfl_r34_demo.yml']
    assert command('baseline', 0, 'out', profile='gfl_demo')[1:4] == [
        'tools/train.py', '-c', 'configs/demo/gfl_r18_demo.yml']
    assert command('ld', 0, 'out', profile='gfl_converged')[2:6] == [
        '-c', 'configs/converged/gfl_r18_converged.yml', '-t',
        'configs/converged/gfl_r34_converged.yml']
    for method in ('ld', 'ld_vlr'):
        cmd = command(method, 0, 'out', profile='gfl_demo')
        cfg = load_config(os.path.join(ROOT, cmd[3]),
                          cmd[cmd.index('-o') + 1:])
        assert cfg['distill_loss'] == 'ld'


def test_sweep_table_compares_weights_at_one_seed(tmp_path):
    """The sweep rows and the default rows they vary, seed 0 only, by loss
    then weight, with the logged distill/det ratio at the end."""
    from detdistill.benchmark import loss_weight, sweep_table
    assert loss_weight('l2') == ('l2', 100.)
    assert loss_weight('l2_w1000') == ('l2', 1000.)
    assert loss_weight('fine_grained') == ('fine_grained', 1000.)
    assert loss_weight('fine_grained_soft') == (
        'fine_grained (soft objectness)', 1000.)
    runs = [_run('baseline', 0, 20), _run('l2', 0, 40), _run('l2', 1, 44),
            _run('l2_w10', 0, 30), _run('fine_grained_w10', 0, 25),
            _run('fine_grained', 0, 33), _run('kl', 0, 35)]
    for r in runs:
        r['losses'] = [{'step': 10, 'det_loss': 4., 'distill_loss': 2.},
                       {'step': 20, 'det_loss': 2., 'distill_loss': 3.}]
    table = sweep_table(runs, ['l2_w10', 'fine_grained_w10'], seed=0)
    assert [(m, w) for m, _, w, *_ in table] == [
        ('fine_grained_w10', 10.), ('fine_grained', 1000.), ('l2_w10', 10.),
        ('l2', 100.)]
    assert table[-1][3:] == (40., 100 * (40 / 110), 1.5)
    rows = aggregate(runs)
    path = tmp_path / 'REPORT.md'
    write_report(rows, None, str(path), 'cmd', sweep=table)
    assert '| l2_w10 | l2 | 10 | 30.00 | 27.27 | 1.5 |' in path.read_text()
    assert sweep_table(runs, []) == []


def test_report_only_and_other_seeds_read_finished_runs(tmp_path):
    """A sweep row rerun at more seeds is reported with its row; a planned
    run without a summary is named as not finished."""
    import json
    from detdistill.benchmark import finished_summaries, other_seeds, run_dir
    out = str(tmp_path)
    for m, s in (('teacher', 0), ('l2', 0), ('l2_w10', 0), ('l2_w10', 2)):
        os.makedirs(run_dir(out, m, s))
        with open(os.path.join(run_dir(out, m, s), 'summary.json'), 'w') as f:
            json.dump(_run(m, s, 30), f)
    done, missing = finished_summaries(['teacher', 'l2', 'l2_w10'], [0, 1, 2],
                                       out, one_seed=['teacher', 'l2_w10'])
    assert [(r['method'], r['seed']) for r in done] == [
        ('teacher', 0), ('l2', 0), ('l2_w10', 0)]
    assert all(r['reused'] for r in done)
    assert missing == [('l2', 1), ('l2', 2)]
    extra = other_seeds(['teacher', 'l2', 'l2_w10'], [0, 1, 2], out,
                        ['teacher', 'l2_w10'])
    assert [(r['method'], r['seed']) for r in extra] == [('l2_w10', 2)]
    # an on-request distill row adds itself, not its teacher a second time
    from detdistill.benchmark import with_finished
    assert [(r['method'], r['seed']) for r in with_finished(
        done[:2], ['l2_w10'], [0, 1, 2], out)] == [
        ('teacher', 0), ('l2', 0), ('l2_w10', 0), ('l2_w10', 2)]


def test_half_label_rows_compare_with_the_labeled_half():
    """Issue 11's rows: gaps from baseline_half, and the check the profile
    exists for, l2_half_unlabeled against l2_half beyond the seed spread."""
    from detdistill.benchmark import PROFILES, command
    runs = [_run('teacher', 0, 50), _run('baseline_half', 0, 10),
            _run('baseline_half', 1, 12), _run('l2_half', 0, 20),
            _run('l2_half', 1, 23), _run('l2_half_unlabeled', 0, 26),
            _run('l2_half_unlabeled', 1, 28),
            _run('l2_half_unlabeled_uw3', 0, 22),
            _run('l2_half_unlabeled_uw3', 1, 26)]
    rows = aggregate(runs)
    assert rows['l2_half_unlabeled']['gap_recovered_11point'] == \
        (27 - 11) / (50 - 11)
    res = {t: (ok, why) for t, ok, why in check_targets(
        rows, None, runs, PROFILES['converged']['targets'])}
    assert res['l2_half_unlabeled beats l2_half by more than the seed '
               'spread'] == (True, 'l2_half_unlabeled - l2_half = +5.50, '
                             'largest seed spread 3.00')
    assert res['l2_half_unlabeled_uw3 beats l2_half by more than the seed '
               'spread'][0] is False  # +2.50 < spread 4
    assert res['teacher at least 40 mAP'] == (True, 'teacher 50.00')
    cmd = command('l2_half_unlabeled_ub4', 1, 'out', profile='converged')
    assert cmd[-2:] == [
        'unlabeled_list=dataset/converged_voc/unlabeled_half.txt',
        'unlabeled_batch_size=4']


def test_same_within_spread_for_the_fast_teacher_rows():
    """Issue 13's check: the compiled+cached teacher's students against the
    plain teacher's, judged against the seed spread, both ways round."""
    from detdistill.benchmark import PROFILES
    runs = [_run('l2_compiled', 0, 26), _run('l2_compiled', 1, 27),
            _run('l2_plain', 0, 27.5), _run('l2_plain', 1, 26.5),
            _run('l2', 0, 30), _run('l2', 1, 31), _run('l2_bf16', 0, 30.25)]
    res = {t: (ok, why) for t, ok, why in check_targets(
        aggregate(runs), None, runs, PROFILES['converged']['targets'])}
    assert res['l2_compiled equals l2_plain within the seed spread'] == (
        True, 'l2_compiled - l2_plain = -0.50, largest seed spread 1.00')
    assert res['l2 equals l2_plain within the seed spread'] == (
        False, 'l2 - l2_plain = +3.50, largest seed spread 1.00')
    # One seed: not judged (its spread is unknown), whatever the difference.
    assert res['l2_bf16 equals l2 within the seed spread'] == (
        None, 'l2_bf16 - l2 = -0.25, seed spread unknown with one seed')


def test_a_bare_run_leaves_the_sweep_to_methods_sweep(demo_voc, tmp_path,
                                                      monkeypatch):
    """A bare `--profile P` plans the profile's methods only (the ~2 h
    budget); `--methods sweep` plans the sweep rows at the first seed, with
    their teacher; a finished sweep run is reported by either."""
    import json
    import shutil
    import benchmark as tool
    from conftest import ROOT, tiny_opts
    from detdistill import benchmark as bm
    from detdistill.benchmark import run_dir
    monkeypatch.setitem(bm.PROFILES, 'tiny_sweep', dict(
        bm.PROFILES['demo'], methods=['teacher', 'baseline', 'l2'],
        sweep=['l2_w10', 'l2_w1000'], one_teacher=True))
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
    import sys, threading
    sys.path.insert(0, {root!r})
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
    log = str(tmp_path / 'train.log')
    with pytest.raises(RuntimeError, match='wrote nothing for 3 s'):
        bm.run_watched([sys.executable, '-c', _STUCK_CHILD.format(
            root=ROOT)], log, stall_s=3)
    text = open(log).read()
    assert text.startswith('started')
    assert 'Current thread' in text and 'in main' in text, text


def test_a_stopped_benchmark_ends_its_children(tmp_path):
    """Ctrl-C or SIGTERM on the benchmark (STOP) ends a running child with
    SIGTERM (exit 143 from the tools' handler) instead of waiting for it."""
    log = str(tmp_path / 'train.log')

    def stop_once_started():  # the child's handlers are set by then
        deadline = time.time() + 120
        while time.time() < deadline and not (
                os.path.exists(log) and 'started' in open(log).read()):
            time.sleep(0.1)
        bm.STOP.set()
    threading.Thread(target=stop_once_started, daemon=True).start()
    try:
        code = bm.run_watched([sys.executable, '-c', _STUCK_CHILD.format(
            root=ROOT)], log, stall_s=600)
    finally:
        bm.STOP.clear()
    assert code == 128 + signal.SIGTERM
