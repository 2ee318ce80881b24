"""bench/peers.py, the comparison with PaddleDetection's own distillation
step and evaluation (tools/dev/profile_step.py --compare_ppdet), end to end
on the demo data."""
import paddle
import pytest

from conftest import tiny_opts
from detdistill.distill.compiled_teacher import TOLERANCE


def test_ppdet_comparison_runs_end_to_end(demo_voc, tmp_path,
                                          teacher_weights):
    from bench import peers
    from bench.catalogue import catalogue
    demo = catalogue().profiles['demo']
    opts = tiny_opts(demo_voc, str(tmp_path))
    steps = peers.compare_steps(demo, repeats=2, num_batches=1, opts=opts,
                                teacher_weights=teacher_weights)
    assert list(steps['steps']) == [k for k, _ in peers.STEP_ROWS]
    assert all(v['wall_s'] > 0 and v['repeats'] == 2
               for v in steps['steps'].values())
    assert steps['batch_size'] == 4 and steps['image_size'] == [160, 160]
    # Warm-up: 4 misses; the two timed steps: 8 hits.
    assert steps['cache'] == \
        'teacher cache: 4 images, 0.1 MB, hit rate 67%'
    assert steps['cache_timed'] == {'hits': 8, 'misses': 0}
    assert steps['compiled_teacher']['active']
    assert steps['compiled_teacher']['max_relative_error'] <= TOLERANCE
    assert steps['to_static_max_relative_error'] <= TOLERANCE
    ratios = steps['ratios']['wall_s']
    s = steps['steps']
    assert ratios['ours_distill_step/ppdet'] == \
        s['ours_distill_step']['wall_s'] / s['ppdet_distill_step']['wall_s']
    ev = peers.compare_eval(demo, repeats=1, opts=opts)
    assert ev['num_images'] == 8
    assert set(ev['evaluate']) == {'ours_evaluate', 'ppdet_evaluate'}
    # Same weights, same images: ppdet's VOCMetric and ours agree.
    assert ev['ppdet_mAP_11point'] == pytest.approx(
        ev['ours_mAP']['11point'], abs=1e-9)
    res = {'machine': peers.machine(), 'paddle': paddle.__version__,
           'ppdet': '2.6.0', 'profiles': {'demo': {
               'steps': steps, 'eval': ev, 'teacher_weights': None,
               'student_weights': None}}}
    res['machine']['loadavg_end'] = [0., 0., 0.]
    out = tmp_path / 'TEACHER_SPEED.md'
    text = peers.write_report(res, str(out), 'cmd')
    assert out.read_text() == text + '\n'
    assert '| ours, eager teacher, cache off | ' in text
