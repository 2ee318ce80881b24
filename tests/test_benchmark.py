"""The benchmark: its arithmetic (spreads, gap recovered, step ratios,
targets), its run plan, and one real parallel invocation on tiny data."""
import os

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
    assert met == {'L2 beats the baseline by more than the seed spread': True,
                   'some method recovers at least half of the gap': True,
                   'distill step within 1.15x of student step + teacher '
                   'forward': False,
                   'distillation loss under 5% of a step': True}
    path = tmp_path / 'REPORT.md'
    write_report(rows, profile, str(path), 'python tools/benchmark.py',
                 check_targets(rows, profile))
    text = path.read_text()
    assert '| l2 | 42.00 ± 2.00 |' in text and 'NOT met' in text


def test_plan_starts_the_distill_teacher_first_and_longest_runs_next():
    from detdistill.benchmark import plan
    runs, needs = plan(['baseline', 'l2', 'teacher'], [1, 0])
    assert runs[0] == ('teacher', 0) and ('teacher', 1) in runs
    assert runs.index(('l2', 1)) < runs.index(('baseline', 1))
    assert needs[('l2', 1)] == {('teacher', 0)} and not needs[('baseline', 0)]
    # Distilling without asking for the teacher still trains the seed-0 one.
    runs, _ = plan(['l2'], [3])
    assert runs == [('teacher', 0), ('l2', 3)]


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
    with open(os.path.join(out, 'runs', 'l2_s0', 'train.log')) as f:
        assert os.path.join('teacher_s0', 'yolov3_r34_demo',
                            'model_final') in f.read()
    for name in ('REPORT.md', 'map_curves.png', 'loss_curves.png'):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert 'Wall time of this benchmark' in open(
        os.path.join(out, 'REPORT.md')).read()
    tool.main(argv)  # everything reused: nothing retrained
    assert 'were reused' in open(os.path.join(out, 'REPORT.md')).read()
