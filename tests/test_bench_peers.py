"""bench/peers.py, the comparison with PaddleDetection's own distillation
step and evaluation (tools/dev/profile_step.py --compare_ppdet), end to end
on the demo data."""
import time

import paddle
import pytest

from conftest import tiny_opts
from detdistill.distill.compiled_teacher import TOLERANCE


class _Clock:
    """time, with every perf_counter reading recorded."""

    def __init__(self):
        self.readings = []

    def perf_counter(self):
        self.readings.append(time.perf_counter())
        return self.readings[-1]

    def process_time(self):
        return time.process_time()


def test_ppdet_comparison_runs_end_to_end(demo_voc, tmp_path,
                                          teacher_weights, monkeypatch):
    from bench import peers, step_cost
    from bench.catalogue import catalogue
    demo = catalogue().profiles['demo']
    opts = tiny_opts(demo_voc, str(tmp_path))
    clock = _Clock()
    monkeypatch.setattr(step_cost, 'time', clock)
    steps = peers.compare_steps(demo, repeats=2, num_batches=1, opts=opts,
                                teacher_weights=teacher_weights)
    names = [k for k, _ in peers.STEP_ROWS]
    assert list(steps['steps']) == names
    # Each variant's wall_s is the median of its two timed calls, read off
    # the clock: round r calls every variant once, in an order rotated by r.
    calls = list(zip(clock.readings[0::2], clock.readings[1::2]))
    assert len(clock.readings) == 2 * len(calls) == 2 * 2 * len(names)
    order = names + names[1:] + names[:1]
    for name in names:
        walls = [end - start for (start, end), k in zip(calls, order)
                 if k == name]
        assert len(walls) == steps['steps'][name]['repeats'] == 2
        assert steps['steps'][name]['wall_s'] == pytest.approx(
            sum(walls) / 2, rel=1e-12), name
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
